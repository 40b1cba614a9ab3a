//! Where a backfill lists objects from, page by page, and how a listed object becomes changes:
//! through the same object projections as webhooks, seen as an update at the listing time.

use billing_sync_projection::{Provider, Seen, clerk, stripe};
use billing_sync_store::Store;
use billing_sync_store::backfill::ListedObject;
use billing_sync_stripe_api::StripeClient;
use serde_json::{Value, json};

use crate::BackfillError;
use crate::clerk_api::ClerkClient;

/// An API to list from.
pub enum Source {
    /// Stripe: customers, the catalog (products, prices), subscriptions (every status), the
    /// credits bought (complete checkout sessions, paid invoices), then each synced customer's
    /// active entitlements.
    Stripe {
        /// The API client.
        client: StripeClient,
        /// The metadata key naming an organization.
        org_metadata_key: String,
    },
    /// Clerk: organizations, users, then organization memberships.
    Clerk(ClerkClient),
}

/// One page, with the cursor of the next.
pub struct Page {
    /// The objects listed.
    pub objects: Vec<Value>,
    /// The cursor of the next page; `None` when this is the last.
    pub next: Option<String>,
    /// The size of the whole list, when the source says.
    pub total: Option<u64>,
    /// When the page was asked for (unix seconds): a listed state is at least this new.
    pub fetched_at: i64,
}

impl Source {
    /// The resources listed, in order: customers before subscriptions (which inherit their
    /// customer's organization) and before entitlements (read per synced customer), the
    /// catalog before subscriptions (whose items name its prices), users before memberships
    /// (which only fill gaps in users). Credits bought are recorded under the same references as
    /// their webhooks' (`checkout:cs_…`, `invoice:in_…:il_…`), so nothing is granted twice.
    pub fn resources(&self) -> &'static [&'static str] {
        match self {
            Source::Stripe { .. } => &[
                "customers",
                "products",
                "prices",
                "subscriptions",
                CHECKOUT_SESSIONS,
                INVOICES,
                ENTITLEMENTS,
            ],
            Source::Clerk(_) => &["organizations", "users", "organization_memberships"],
        }
    }

    /// The provider it lists from.
    pub fn provider(&self) -> Provider {
        match self {
            Source::Stripe { .. } => Provider::Stripe,
            Source::Clerk(_) => Provider::Clerk,
        }
    }

    /// The page of `resource` at `cursor` (`None`: the first page). `store` holds what was
    /// synced, for resources listed per synced object.
    pub async fn page(
        &self,
        store: &Store,
        resource: &str,
        cursor: Option<&str>,
        page_size: u64,
    ) -> Result<Page, BackfillError> {
        let fetched_at = chrono::Utc::now().timestamp();
        match self {
            Source::Stripe { client, .. } if resource == ENTITLEMENTS => {
                // A page is a page of synced customers, each with its whole entitlement list;
                // the cursor is the last customer's id.
                let customers = store.customer_ids_after(cursor, page_size).await?;
                let mut objects = Vec::with_capacity(customers.len());
                for customer in &customers {
                    objects.push(entitlement_summary(client, customer).await?);
                }
                let full = customers.len() as u64 >= page_size;
                Ok(Page {
                    next: customers.last().cloned().filter(|_| full),
                    objects,
                    total: None,
                    fetched_at,
                })
            }
            Source::Stripe { client, .. } => {
                let limit = page_size.min(100).to_string();
                let mut query = vec![("limit", limit.as_str())];
                match resource {
                    // Without it Stripe leaves canceled subscriptions out.
                    "subscriptions" => query.push(("status", "all")),
                    // Only what was paid can have bought credits.
                    CHECKOUT_SESSIONS => query.push(("status", "complete")),
                    INVOICES => query.push(("status", "paid")),
                    _ => {}
                }
                if let Some(cursor) = cursor {
                    query.push(("starting_after", cursor));
                }
                let page = client.list_page(&[resource], &query).await?;
                Ok(Page {
                    next: page.next_cursor(),
                    objects: page.data,
                    total: None,
                    fetched_at,
                })
            }
            Source::Clerk(client) => {
                let offset = match cursor {
                    None => 0,
                    Some(cursor) => cursor
                        .parse()
                        .map_err(|_| BackfillError::BadCheckpoint(cursor.to_owned()))?,
                };
                let limit = page_size.min(500);
                let page = client.list_page(resource, limit, offset).await?;
                let reached = offset + page.data.len() as u64;
                let more = match page.total_count {
                    Some(total) => reached < total && !page.data.is_empty(),
                    None => page.data.len() as u64 >= limit,
                };
                Ok(Page {
                    next: more.then(|| reached.to_string()),
                    objects: page.data,
                    total: page.total_count,
                    fetched_at,
                })
            }
        }
    }

    /// The changes a listed object makes: its state seen as an update at `fetched_at`. Stripe
    /// orders by event `created`, so a state listed now is at least as new as any event created
    /// before the page was asked for (a deleted customer's stub is a tombstone all the same);
    /// Clerk orders by the object's own `updated_at`, which a listed object carries.
    pub fn project(&self, resource: &str, object: Value, fetched_at: i64) -> ListedObject {
        let (object, at, seen) = (&object, fetched_at, Seen::Updated);
        let one = |change: Result<_, String>| change.map(|change| vec![change]);
        match (self, resource) {
            (
                Source::Stripe {
                    org_metadata_key, ..
                },
                "customers",
            ) => one(stripe::customer(object.into(), at, seen, org_metadata_key)),
            (
                Source::Stripe {
                    org_metadata_key, ..
                },
                "subscriptions",
            ) => one(stripe::subscription(
                object.into(),
                at,
                seen,
                org_metadata_key,
            )),
            (Source::Stripe { .. }, "products") => one(stripe::product(object.into(), at, seen)),
            (Source::Stripe { .. }, "prices") => one(stripe::price(object.into(), at, seen)),
            (Source::Stripe { .. }, ENTITLEMENTS) => one(stripe::entitlements(object.into(), at)),
            (
                Source::Stripe {
                    org_metadata_key, ..
                },
                CHECKOUT_SESSIONS,
            ) => stripe::checkout_purchase(object, org_metadata_key).map(Vec::from_iter),
            (
                Source::Stripe {
                    org_metadata_key, ..
                },
                INVOICES,
            ) => stripe::invoice_allowances(object, org_metadata_key),
            (Source::Clerk(_), "organizations") => one(clerk::organization(object, at, seen)),
            (Source::Clerk(_), "users") => one(clerk::user(object, at, seen)),
            (Source::Clerk(_), "organization_memberships") => clerk::membership(object, at, seen),
            (_, other) => Err(format!("unknown resource {other}")),
        }
    }
}

/// The resource name of the per-customer entitlement lists.
const ENTITLEMENTS: &str = "entitlements";
/// Checkout sessions: a paid one-time session bought credits.
const CHECKOUT_SESSIONS: &str = "checkout/sessions";
/// Invoices: a paid subscription invoice's lines may grant allowances.
const INVOICES: &str = "invoices";

/// A customer's active entitlements read from `GET /v1/entitlements/active_entitlements`
/// (every page), as the summary object Stripe's event carries.
async fn entitlement_summary(
    client: &StripeClient,
    customer: &str,
) -> Result<Value, BackfillError> {
    let mut entitlements = Vec::new();
    let mut after: Option<String> = None;
    let mut cursors_seen = std::collections::HashSet::new();
    loop {
        let mut query = vec![("customer", customer), ("limit", "100")];
        if let Some(after) = &after {
            query.push(("starting_after", after.as_str()));
        }
        let page = client
            .list_page(&["entitlements", "active_entitlements"], &query)
            .await?;
        let has_more = page.has_more;
        let next = page.next_cursor();
        entitlements.extend(page.data);
        // The list is stored whole or not at all: a source that says there is more but gives
        // no cursor, or one already followed, would leave it in part.
        match next {
            Some(last) if cursors_seen.insert(last.clone()) => after = Some(last),
            None if !has_more => break,
            stuck => {
                return Err(BackfillError::CursorStuck {
                    resource: format!("stripe/entitlements of {customer}"),
                    cursor: stuck.or(after).unwrap_or_default(),
                });
            }
        }
    }
    let livemode = entitlements
        .first()
        .and_then(|entitlement| entitlement.get("livemode"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(json!({
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "entitlements": {"object": "list", "data": entitlements, "has_more": false},
        "livemode": livemode,
    }))
}
