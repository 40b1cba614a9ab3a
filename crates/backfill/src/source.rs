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
    pub fn resources(&self) -> &'static [Resource] {
        match self {
            Source::Stripe { .. } => &[
                Resource::Stripe(StripeResource::Customers),
                Resource::Stripe(StripeResource::Products),
                Resource::Stripe(StripeResource::Prices),
                Resource::Stripe(StripeResource::Subscriptions),
                Resource::Stripe(StripeResource::CheckoutSessions),
                Resource::Stripe(StripeResource::Invoices),
                Resource::Stripe(StripeResource::Entitlements),
            ],
            Source::Clerk(_) => &[
                Resource::Clerk(ClerkResource::Organizations),
                Resource::Clerk(ClerkResource::Users),
                Resource::Clerk(ClerkResource::Memberships),
            ],
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
        resource: Resource,
        cursor: Option<&str>,
        page_size: u64,
    ) -> Result<Page, BackfillError> {
        let fetched_at = chrono::Utc::now().timestamp();
        match (self, resource) {
            (Source::Stripe { client, .. }, Resource::Stripe(StripeResource::Entitlements)) => {
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
            (Source::Stripe { client, .. }, Resource::Stripe(listed)) => {
                let limit = page_size.min(100).to_string();
                let mut query = vec![("limit", limit.as_str())];
                if let Some(status) = listed.status() {
                    query.push(("status", status));
                }
                if let Some(cursor) = cursor {
                    query.push(("starting_after", cursor));
                }
                let page = client.list_page(listed.path(), &query).await?;
                Ok(Page {
                    next: page.next_cursor(),
                    objects: page.data,
                    total: None,
                    fetched_at,
                })
            }
            (Source::Clerk(client), Resource::Clerk(listed)) => {
                let offset = match cursor {
                    None => 0,
                    Some(cursor) => cursor
                        .parse()
                        .map_err(|_| BackfillError::BadCheckpoint(cursor.to_owned()))?,
                };
                let limit = page_size.min(500);
                let page = client.list_page(listed.name(), limit, offset).await?;
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
            (Source::Stripe { .. }, Resource::Clerk(_))
            | (Source::Clerk(_), Resource::Stripe(_)) => {
                Err(BackfillError::NotListedHere(resource.name()))
            }
        }
    }

    /// The changes a listed object makes: its state seen as an update at `fetched_at`. Stripe
    /// orders by event `created`, so a state listed now is at least as new as any event created
    /// before the page was asked for (a deleted customer's stub is a tombstone all the same);
    /// Clerk orders by the object's own `updated_at`, which a listed object carries.
    pub fn project(&self, resource: Resource, object: Value, fetched_at: i64) -> ListedObject {
        let (object, at, seen) = (&object, fetched_at, Seen::Updated);
        let one = |change: Result<_, String>| change.map(|change| vec![change]);
        match resource {
            Resource::Stripe(listed) => {
                let Source::Stripe {
                    org_metadata_key, ..
                } = self
                else {
                    return Err(format!("{} is not listed from Clerk", resource.name()));
                };
                match listed {
                    StripeResource::Customers => {
                        one(stripe::customer(object.into(), at, seen, org_metadata_key))
                    }
                    StripeResource::Products => one(stripe::product(object.into(), at, seen)),
                    StripeResource::Prices => one(stripe::price(object.into(), at, seen)),
                    StripeResource::Subscriptions => one(stripe::subscription(
                        object.into(),
                        at,
                        seen,
                        org_metadata_key,
                    )),
                    StripeResource::CheckoutSessions => {
                        stripe::checkout_purchase(object, org_metadata_key).map(Vec::from_iter)
                    }
                    StripeResource::Invoices => {
                        stripe::invoice_allowances(object, org_metadata_key)
                    }
                    StripeResource::Entitlements => one(stripe::entitlements(object.into(), at)),
                }
            }
            Resource::Clerk(listed) => match listed {
                ClerkResource::Organizations => one(clerk::organization(object, at, seen)),
                ClerkResource::Users => one(clerk::user(object, at, seen)),
                ClerkResource::Memberships => clerk::membership(object, at, seen),
            },
        }
    }
}

/// What a backfill lists, by provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// From Stripe's API.
    Stripe(StripeResource),
    /// From Clerk's Backend API.
    Clerk(ClerkResource),
}

impl Resource {
    /// Its name in checkpoints, logs and the summary (after the provider: `stripe/customers`).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Stripe(listed) => listed.name(),
            Resource::Clerk(listed) => listed.name(),
        }
    }
}

/// What a backfill lists from Stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripeResource {
    /// Customers.
    Customers,
    /// Products (the catalog).
    Products,
    /// Prices (the catalog).
    Prices,
    /// Subscriptions of every status (Stripe leaves canceled ones out unless asked).
    Subscriptions,
    /// Complete checkout sessions: a paid one-time session bought credits.
    CheckoutSessions,
    /// Paid invoices: a subscription invoice's lines may grant allowances.
    Invoices,
    /// Each synced customer's active entitlements, read per customer.
    Entitlements,
}

impl StripeResource {
    fn name(self) -> &'static str {
        match self {
            StripeResource::Customers => "customers",
            StripeResource::Products => "products",
            StripeResource::Prices => "prices",
            StripeResource::Subscriptions => "subscriptions",
            StripeResource::CheckoutSessions => "checkout/sessions",
            StripeResource::Invoices => "invoices",
            StripeResource::Entitlements => "entitlements",
        }
    }

    /// The list endpoint's path under `/v1/`.
    fn path(self) -> &'static [&'static str] {
        match self {
            StripeResource::Customers => &["customers"],
            StripeResource::Products => &["products"],
            StripeResource::Prices => &["prices"],
            StripeResource::Subscriptions => &["subscriptions"],
            StripeResource::CheckoutSessions => &["checkout", "sessions"],
            StripeResource::Invoices => &["invoices"],
            StripeResource::Entitlements => &["entitlements", "active_entitlements"],
        }
    }

    /// The `status` the list is asked for: every subscription, and only what was paid, which
    /// alone can have bought credits.
    fn status(self) -> Option<&'static str> {
        match self {
            StripeResource::Subscriptions => Some("all"),
            StripeResource::CheckoutSessions => Some("complete"),
            StripeResource::Invoices => Some("paid"),
            StripeResource::Customers
            | StripeResource::Products
            | StripeResource::Prices
            | StripeResource::Entitlements => None,
        }
    }
}

/// What a backfill lists from Clerk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClerkResource {
    /// Organizations.
    Organizations,
    /// Users.
    Users,
    /// Organization memberships.
    Memberships,
}

impl ClerkResource {
    /// Its name, which is also its Backend API path under `/v1/`.
    fn name(self) -> &'static str {
        match self {
            ClerkResource::Organizations => "organizations",
            ClerkResource::Users => "users",
            ClerkResource::Memberships => "organization_memberships",
        }
    }
}

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
            .list_page(StripeResource::Entitlements.path(), &query)
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
