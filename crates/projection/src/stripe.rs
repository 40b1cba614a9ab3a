//! Stripe events → changes to the synced state.
//!
//! Ordering: every change carries the event's `created` (one-second resolution) and a rank for
//! ties within a second: a terminal state (deleted customer; `canceled` or `incomplete_expired`
//! subscription) beats everything and is never resurrected, a `*.created` event loses to any
//! other event of the object, and two other updates of one object within one second are left to
//! arrival order (a documented limit).

use serde_json::{Value, json};

use crate::Seen;
use crate::event::{NewEvent, Plan};
use crate::json::{flag, id_or_object, integer, metadata, required_text, text, time, unix_seconds};
use crate::state::RawJson;
use crate::state::{
    Change, ChargeRefund, CreditPurchase, CustomerLink, CustomerState, EntitlementsState, LinkedBy,
    PriceState, ProductState, PurchaseSource, Rank, SubscriptionState, SyncedRow, Version,
};

/// The kinds of object the projections read, each carried by its own event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// `customer.*`.
    Customer,
    /// `checkout.session.*`.
    CheckoutSession,
    /// `customer.subscription.*`.
    Subscription,
    /// `product.*`.
    Product,
    /// `price.*`.
    Price,
    /// `entitlements.active_entitlement_summary.updated`.
    EntitlementSummary,
    /// `invoice.paid`.
    Invoice,
    /// `charge.refunded`.
    Charge,
}

/// Every Stripe event type a projection reads, with the kind of object it carries: the one
/// place they are listed. Any other type is recorded `ignored`. The development loop's
/// `stripe listen --events` line (docs/operations.md) names exactly these (a test checks it).
const PROJECTED: [(&str, Carried); 22] = [
    ("customer.created", Carried::Customer),
    ("customer.updated", Carried::Customer),
    ("customer.deleted", Carried::Customer),
    ("customer.subscription.created", Carried::Subscription),
    ("customer.subscription.updated", Carried::Subscription),
    ("customer.subscription.deleted", Carried::Subscription),
    ("customer.subscription.paused", Carried::Subscription),
    ("customer.subscription.resumed", Carried::Subscription),
    (
        "customer.subscription.pending_update_applied",
        Carried::Subscription,
    ),
    (
        "customer.subscription.pending_update_expired",
        Carried::Subscription,
    ),
    (
        "customer.subscription.trial_will_end",
        Carried::Subscription,
    ),
    ("checkout.session.completed", Carried::CheckoutSession),
    (
        "checkout.session.async_payment_succeeded",
        Carried::CheckoutSession,
    ),
    ("invoice.paid", Carried::Invoice),
    ("charge.refunded", Carried::Charge),
    ("product.created", Carried::Product),
    ("product.updated", Carried::Product),
    ("product.deleted", Carried::Product),
    ("price.created", Carried::Price),
    ("price.updated", Carried::Price),
    ("price.deleted", Carried::Price),
    (
        "entitlements.active_entitlement_summary.updated",
        Carried::EntitlementSummary,
    ),
];

/// The Stripe event types billing-sync projects, in the order above: what to forward with
/// `stripe listen --events` or select on a dashboard endpoint.
pub fn projected_event_types() -> impl Iterator<Item = &'static str> {
    PROJECTED.iter().map(|(event_type, _)| *event_type)
}

impl Carried {
    /// The kind of object an event of `event_type` carries, if a projection reads it.
    pub fn by(event_type: &str) -> Option<Carried> {
        PROJECTED
            .iter()
            .find(|(projected, _)| *projected == event_type)
            .map(|(_, carried)| *carried)
    }
}

/// What `event` changes, reading the organization from `metadata[STRIPE_ORG_METADATA_KEY]`
/// (see [`crate::Projection`]): the event's `data.object`, seen at the event's `created` as its
/// type says ([`Seen`]).
pub fn project(event: &NewEvent, projection: &crate::Projection) -> Plan {
    let org_metadata_key = projection.stripe_org_metadata_key.as_str();
    let Some(carried) = Carried::by(&event.event_type) else {
        return Plan::Ignore;
    };
    let seen = Seen::by_event_type(&event.event_type);
    let one = |change: Result<Change, String>| change.map(|change| vec![change]);
    let result = match carried {
        Carried::Customer => object_and_time(event)
            .and_then(|(object, at)| one(customer(object, at, seen, org_metadata_key))),
        Carried::CheckoutSession => fields(event).and_then(|object| {
            let link = checkout_link(object, projection)?;
            let purchase = checkout_purchase(object, &projection.stripe_org_metadata_key)?;
            Ok(link.into_iter().chain(purchase).collect())
        }),
        Carried::Invoice => fields(event)
            .and_then(|object| invoice_allowances(object, &projection.stripe_org_metadata_key)),
        Carried::Charge => fields(event).map(|object| charge_refund(object).into_iter().collect()),
        Carried::Subscription => object_and_time(event)
            .and_then(|(object, at)| one(subscription(object, at, seen, org_metadata_key))),
        Carried::Product => {
            object_and_time(event).and_then(|(object, at)| one(product(object, at, seen)))
        }
        Carried::Price => {
            object_and_time(event).and_then(|(object, at)| one(price(object, at, seen)))
        }
        Carried::EntitlementSummary => {
            object_and_time(event).and_then(|(object, at)| one(entitlements(object, at)))
        }
    };
    match result {
        Ok(changes) => Plan::Apply(changes),
        Err(reason) => Plan::Fail(reason),
    }
}

/// The fields that the projection of an event of `event_type` reads from its object, for
/// [`crate::stripe_event`]'s sparse reading; `None` for types no projection reads.
pub(crate) fn shape_of(event_type: &str) -> Option<&'static crate::sparse::Shape> {
    use crate::sparse;
    Some(match Carried::by(event_type)? {
        Carried::Customer => &sparse::CUSTOMER,
        Carried::CheckoutSession => &sparse::CHECKOUT_SESSION,
        Carried::Subscription => &sparse::SUBSCRIPTION,
        Carried::Product => &sparse::PRODUCT,
        Carried::Price => &sparse::PRICE,
        Carried::EntitlementSummary => &sparse::ENTITLEMENT_SUMMARY,
        Carried::Invoice => &sparse::INVOICE,
        Carried::Charge => &sparse::CHARGE,
    })
}

/// A Stripe object as its projection reads it: its fields, and its JSON text for the `raw`
/// column.
pub struct Object<'a> {
    /// The fields (all of them, or at least those the projection reads).
    pub fields: &'a Value,
    /// The whole object's JSON text.
    pub raw: RawJson,
}

impl<'a> From<&'a Value> for Object<'a> {
    /// A whole object (listed, fetched, or parsed as a tree): its text serialised from it.
    fn from(object: &'a Value) -> Self {
        Object {
            fields: object,
            raw: RawJson::of(object),
        }
    }
}

fn fields(event: &NewEvent) -> Result<&Value, String> {
    event
        .payload
        .get("data")
        .and_then(|data| data.get("object"))
        .filter(|object| object.is_object())
        .ok_or_else(|| "event has no `data.object`".to_owned())
}

/// The event's object and its `created`, which orders the object's states.
fn object_and_time(event: &NewEvent) -> Result<(Object<'_>, i64), String> {
    let fields = fields(event)?;
    let created = event
        .event_created
        .ok_or_else(|| "event has no integer `created`".to_owned())?;
    let raw = match &event.object_text {
        Some(text) => text.clone(),
        None => RawJson::of(fields),
    };
    Ok((Object { fields, raw }, created))
}

fn version(at: i64, seen: Seen, terminal: bool) -> Version {
    let rank = if terminal {
        Rank::Terminal
    } else if seen == Seen::Created {
        Rank::Initial
    } else {
        Rank::Update
    };
    Version { key: at, rank }
}

/// A customer seen at `at` (unix seconds); a deleted one (`Seen::Deleted`, or Stripe's
/// `deleted: true` stub) is a tombstone.
pub fn customer(object: Object<'_>, at: i64, seen: Seen, org_key: &str) -> Result<Change, String> {
    let Object {
        fields: object,
        raw,
    } = object;
    let deleted = seen == Seen::Deleted || flag(object, "deleted");
    Ok(Change::Customer(CustomerState {
        row: SyncedRow {
            id: required_text(object, "id", "customer")?,
            raw,
            version: version(at, seen, deleted),
            deleted_at: if deleted { unix_seconds(at) } else { None },
        },
        organization_id: metadata(object, org_key),
        email: text(object, "email"),
        name: text(object, "name"),
        livemode: flag(object, "livemode"),
    }))
}

/// A subscription seen at `at`: `canceled` and `incomplete_expired` are terminal.
pub fn subscription(
    object: Object<'_>,
    at: i64,
    seen: Seen,
    org_key: &str,
) -> Result<Change, String> {
    let Object {
        fields: object,
        raw,
    } = object;
    let status = required_text(object, "status", "subscription")?;
    let terminal = matches!(status.as_str(), "canceled" | "incomplete_expired");
    let items = items(object);
    // Since API version 2025-03-31 the current period lives on the items.
    let period_start = time(object, "current_period_start")
        .or_else(|| first_item(object).and_then(|item| time(item, "current_period_start")));
    let period_end = time(object, "current_period_end")
        .or_else(|| first_item(object).and_then(|item| time(item, "current_period_end")));
    Ok(Change::Subscription(SubscriptionState {
        row: SyncedRow {
            id: required_text(object, "id", "subscription")?,
            raw,
            version: version(at, seen, terminal),
            deleted_at: deleted_at(at, seen),
        },
        customer_id: id_or_object(object, "customer")
            .ok_or_else(|| "subscription has no `customer`".to_owned())?,
        organization_id: metadata(object, org_key),
        status,
        cancel_at_period_end: flag(object, "cancel_at_period_end"),
        cancel_at: time(object, "cancel_at"),
        canceled_at: time(object, "canceled_at"),
        ended_at: time(object, "ended_at"),
        trial_end: time(object, "trial_end"),
        current_period_start: period_start,
        current_period_end: period_end,
        items,
        livemode: flag(object, "livemode"),
    }))
}

/// A catalog object's tombstone time: deleted is terminal (a deleted product or price is never
/// resurrected; an archived one, `active: false`, is an ordinary update).
fn deleted_at(at: i64, seen: Seen) -> Option<chrono::DateTime<chrono::Utc>> {
    if seen == Seen::Deleted {
        unix_seconds(at)
    } else {
        None
    }
}

/// A product seen at `at`.
pub fn product(object: Object<'_>, at: i64, seen: Seen) -> Result<Change, String> {
    let Object {
        fields: object,
        raw,
    } = object;
    // `marketing_features` is `[{name}]`; entries without a name are left out.
    let marketing_features = object
        .get("marketing_features")
        .and_then(Value::as_array)
        .map(|features| {
            features
                .iter()
                .filter_map(|feature| text(feature, "name"))
                .map(Value::String)
                .collect()
        })
        .unwrap_or_default();
    Ok(Change::Product(ProductState {
        row: SyncedRow {
            id: required_text(object, "id", "product")?,
            raw,
            version: version(at, seen, seen == Seen::Deleted),
            deleted_at: deleted_at(at, seen),
        },
        name: text(object, "name"),
        description: text(object, "description"),
        active: flag(object, "active"),
        marketing_features: Value::Array(marketing_features),
        default_price_id: id_or_object(object, "default_price"),
        livemode: flag(object, "livemode"),
    }))
}

/// A price seen at `at`.
pub fn price(object: Object<'_>, at: i64, seen: Seen) -> Result<Change, String> {
    let Object {
        fields: object,
        raw,
    } = object;
    let recurring = object.get("recurring").filter(|r| r.is_object());
    Ok(Change::Price(PriceState {
        row: SyncedRow {
            id: required_text(object, "id", "price")?,
            raw,
            version: version(at, seen, seen == Seen::Deleted),
            deleted_at: deleted_at(at, seen),
        },
        product_id: id_or_object(object, "product")
            .ok_or_else(|| "price has no `product`".to_owned())?,
        active: flag(object, "active"),
        currency: required_text(object, "currency", "price")?,
        unit_amount: integer(object, "unit_amount"),
        lookup_key: text(object, "lookup_key"),
        nickname: text(object, "nickname"),
        recurring_interval: recurring.and_then(|r| text(r, "interval")),
        recurring_interval_count: recurring.and_then(|r| integer(r, "interval_count")),
        livemode: flag(object, "livemode"),
    }))
}

/// A customer's whole list of active entitlements, replacing the stored one. A summary whose
/// list says `has_more` is incomplete: it fails rather than store part of the list as the
/// whole (a backfill reads the complete list from the API).
pub fn entitlements(object: Object<'_>, at: i64) -> Result<Change, String> {
    let Object {
        fields: object,
        raw,
    } = object;
    let list = object
        .get("entitlements")
        .filter(|list| list.is_object())
        .ok_or_else(|| "entitlement summary has no `entitlements` list".to_owned())?;
    if flag(list, "has_more") {
        return Err("entitlement summary lists only part of the entitlements (`has_more`)".into());
    }
    let lookup_keys = entitlement_lookup_keys(
        list.get("data")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    Ok(Change::Entitlements(EntitlementsState {
        row: SyncedRow {
            id: id_or_object(object, "customer")
                .ok_or_else(|| "entitlement summary has no `customer`".to_owned())?,
            raw,
            version: Version {
                key: at,
                rank: Rank::Update,
            },
            deleted_at: None,
        },
        lookup_keys,
        livemode: flag(object, "livemode"),
    }))
}

/// The `lookup_key`s of active entitlement objects, sorted and without repeats, as a JSON array.
pub fn entitlement_lookup_keys(entitlements: &[Value]) -> Value {
    let mut keys: Vec<String> = entitlements
        .iter()
        .filter_map(|entitlement| text(entitlement, "lookup_key"))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Value::Array(keys.into_iter().map(Value::String).collect())
}

fn first_item(subscription: &Value) -> Option<&Value> {
    subscription.get("items")?.get("data")?.get(0)
}

fn items(subscription: &Value) -> Value {
    let items = subscription
        .get("items")
        .and_then(|items| items.get("data"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Value::Array(
        items
            .iter()
            .map(|item| {
                let price = item.get("price").unwrap_or(&Value::Null);
                json!({
                    "id": text(item, "id"),
                    "price_id": text(price, "id"),
                    "product_id": id_or_object(price, "product"),
                    "quantity": integer(item, "quantity"),
                    "current_period_start": integer(item, "current_period_start"),
                    "current_period_end": integer(item, "current_period_end"),
                })
            })
            .collect(),
    )
}

/// The link a completed checkout session makes between its customer and an organization, if
/// it names both. The organization is the one the session's metadata names: set by the server
/// that created the session (billing-sync's checkout), or configured by the merchant on a
/// Payment Link. A `client_reference_id` comes from the browser (a Payment Link's or a pricing
/// table's URL): it names the organization only when it is a reference billing-sync signed
/// ([`crate::client_reference`]) and the session was created before it expired, and then can
/// only link an organization that has no customer yet ([`LinkedBy`]).
pub fn checkout_link(
    object: &Value,
    projection: &crate::Projection,
) -> Result<Option<Change>, String> {
    let by_metadata = metadata(object, &projection.stripe_org_metadata_key)
        .map(|organization| (organization, LinkedBy::Metadata));
    let by_reference = || {
        let key = projection.client_reference_key.as_ref()?;
        let reference = text(object, "client_reference_id")?;
        // A session without `created` is not one Stripe sent: no time to check the expiry at.
        let created = integer(object, "created")?;
        key.verify(&reference, created)
            .map(|organization| (organization, LinkedBy::ClientReference))
    };
    // A guest checkout has no customer, and a checkout for no organization links nothing:
    // both are recorded as processed with no change.
    let (Some(customer_id), Some((organization_id, linked_by))) = (
        id_or_object(object, "customer"),
        by_metadata.or_else(by_reference),
    ) else {
        return Ok(None);
    };
    Ok(Some(Change::CustomerLink(CustomerLink {
        customer_id,
        organization_id,
        linked_by,
        livemode: flag(object, "livemode"),
    })))
}

/// The metadata billing-sync's checkout writes on a session that sells credits: the price,
/// the quantity, and the credits the purchase grants in all (quantity × the price's credits
/// per unit, computed when the session was created). The one place the keys are named.
pub const CHECKOUT_PRICE_METADATA: &str = "billing_sync_price";
/// See [`CHECKOUT_PRICE_METADATA`].
pub const CHECKOUT_QUANTITY_METADATA: &str = "billing_sync_quantity";
/// See [`CHECKOUT_PRICE_METADATA`].
pub const CHECKOUT_CREDITS_METADATA: &str = "billing_sync_credits";

/// Whether a checkout session is a paid one-time purchase (`mode` `payment`, `payment_status`
/// `paid`, or `no_payment_required`: a 100 % discount buys as much as a payment does). A
/// session still awaiting an asynchronous payment (`unpaid`) has bought nothing yet: its
/// `checkout.session.async_payment_succeeded` says when it has.
fn is_paid_purchase(object: &Value) -> bool {
    text(object, "mode").as_deref() == Some("payment")
        && matches!(
            text(object, "payment_status").as_deref(),
            Some("paid" | "no_payment_required")
        )
}

/// Whether what a paid one-time session bought is only in its line items: billing-sync's
/// checkout did not create it (no [`CHECKOUT_CREDITS_METADATA`]; a Payment Link's, say), so only
/// the Stripe API can say ([`project_with_line_items`]).
pub fn needs_line_items(object: &Value) -> bool {
    is_paid_purchase(object) && metadata(object, CHECKOUT_CREDITS_METADATA).is_none()
}

/// The credits a paid one-time checkout session bought, when billing-sync's checkout created it
/// (its metadata says how many, 0 for a price without credits: [`CHECKOUT_CREDITS_METADATA`]).
/// A paid session it did not create is refused (recorded `failed`, for a replay): what it bought
/// is in its line items, read from the Stripe API when `STRIPE_SECRET_KEY` is set
/// ([`project_with_line_items`]).
pub fn checkout_purchase(object: &Value, org_key: &str) -> Result<Option<Change>, String> {
    if !is_paid_purchase(object) {
        return Ok(None);
    }
    let id = required_text(object, "id", "checkout session")?;
    let Some(credits) = metadata(object, CHECKOUT_CREDITS_METADATA) else {
        return Err(format!(
            "checkout session {id} was not created by billing-sync: what it bought is in its \
             line items, which only the Stripe API gives; set STRIPE_SECRET_KEY, then replay it"
        ));
    };
    let credits = credits
        .parse::<i64>()
        .ok()
        .filter(|credits| billing_sync_credits::is_grantable(*credits))
        .ok_or_else(|| {
            format!(
                "checkout session {id}: metadata `{CHECKOUT_CREDITS_METADATA}` is not a whole \
                 number of credits between 0 and {}",
                billing_sync_credits::MAX_AMOUNT
            )
        })?;
    if credits == 0 {
        return Ok(None);
    }
    Ok(Some(Change::CreditPurchase(CreditPurchase {
        reference: format!("checkout:{id}"),
        source: PurchaseSource::Checkout,
        customer_id: id_or_object(object, "customer"),
        organization_id: metadata(object, org_key),
        price_id: metadata(object, CHECKOUT_PRICE_METADATA),
        quantity: metadata(object, CHECKOUT_QUANTITY_METADATA).and_then(|q| q.parse().ok()),
        credits: Some(credits),
        expires_at: None,
        payment_id: id_or_object(object, "payment_intent"),
    })))
}

/// What a checkout session's event changes once its `line_items` (read from the Stripe API)
/// say what it bought: its link, and one pending grant per item (reference
/// `checkout:cs_…:li_…`) whose credits the catalog gives when the ledger credits it (none for a
/// price without credits).
pub fn project_with_line_items(
    event: &NewEvent,
    projection: &crate::Projection,
    line_items: &[Value],
) -> Plan {
    let result = fields(event).and_then(|session| {
        let link = checkout_link(session, projection)?;
        let id = required_text(session, "id", "checkout session")?;
        let org_key = &projection.stripe_org_metadata_key;
        let purchases = line_items.iter().map(|item| {
            Ok(Change::CreditPurchase(CreditPurchase {
                reference: format!("checkout:{id}:{}", required_text(item, "id", "line item")?),
                source: PurchaseSource::Checkout,
                customer_id: id_or_object(session, "customer"),
                organization_id: metadata(session, org_key),
                price_id: id_or_object(item, "price"),
                quantity: integer(item, "quantity"),
                credits: None,
                expires_at: None,
                payment_id: id_or_object(session, "payment_intent"),
            }))
        });
        link.map(Ok).into_iter().chain(purchases).collect()
    });
    match result {
        Ok(changes) => Plan::Apply(changes),
        Err(reason) => Plan::Fail(reason),
    }
}

/// The allowances a paid subscription invoice may grant: one per line that bills a price for a
/// subscription item (prorations excluded), expiring at the line's period end. Whether the
/// price carries credits, and how many per unit, the catalog says when the ledger credits it.
pub fn invoice_allowances(object: &Value, org_key: &str) -> Result<Vec<Change>, String> {
    let id = required_text(object, "id", "invoice")?;
    let lines = object.get("lines");
    if lines.and_then(|lines| lines.get("has_more")) == Some(&Value::Bool(true)) {
        return Err(format!(
            "invoice {id}: its lines are paginated (has_more); billing-sync reads only the lines \
             an event carries"
        ));
    }
    let organization_id = object
        .get("parent")
        .and_then(|parent| parent.get("subscription_details"))
        .and_then(|details| metadata(details, org_key))
        .or_else(|| metadata(object, org_key));
    let payment_id = id_or_object(object, "payment_intent").or_else(|| {
        object
            .get("payments")
            .and_then(|payments| payments.get("data"))
            .and_then(Value::as_array)
            .and_then(|payments| payments.first())
            .and_then(|payment| payment.get("payment"))
            .and_then(|payment| id_or_object(payment, "payment_intent"))
    });
    let lines = lines
        .and_then(|lines| lines.get("data"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(lines
        .iter()
        .filter_map(|line| {
            let item = line
                .get("parent")
                .and_then(|parent| parent.get("subscription_item_details"));
            let for_subscription = item.is_some_and(Value::is_object)
                || text(line, "subscription").is_some()
                || text(line, "type").as_deref() == Some("subscription");
            let proration = item.and_then(|item| item.get("proration")) == Some(&Value::Bool(true))
                || line.get("proration") == Some(&Value::Bool(true));
            if !for_subscription || proration {
                return None;
            }
            let price_id = line
                .get("pricing")
                .and_then(|pricing| pricing.get("price_details"))
                .and_then(|details| id_or_object(details, "price"))
                .or_else(|| id_or_object(line, "price"))?;
            Some(Change::CreditPurchase(CreditPurchase {
                reference: format!("invoice:{id}:{}", text(line, "id")?),
                source: PurchaseSource::Invoice,
                customer_id: id_or_object(object, "customer"),
                organization_id: organization_id.clone(),
                price_id: Some(price_id),
                quantity: Some(integer(line, "quantity")?),
                credits: None,
                expires_at: line.get("period").and_then(|period| integer(period, "end")),
                payment_id: payment_id.clone(),
            }))
        })
        .collect())
}

/// What a refunded charge says of its payment: recorded when it names one (a refund of a
/// payment that bought credits takes them back).
pub fn charge_refund(object: &Value) -> Option<Change> {
    Some(Change::ChargeRefund(ChargeRefund {
        charge_id: text(object, "id")?,
        payment_id: id_or_object(object, "payment_intent")?,
        paid: integer(object, "amount_captured")
            .filter(|captured| *captured > 0)
            .or_else(|| integer(object, "amount"))?,
        refunded: integer(object, "amount_refunded")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, created: i64, object: Value) -> NewEvent {
        NewEvent {
            provider: crate::Provider::Stripe,
            event_id: "evt_test".into(),
            event_type: event_type.into(),
            api_version: Some("2026-07-29.dahlia".into()),
            livemode: Some(false),
            event_created: Some(created),
            payload: json!({"id": "evt_test", "type": event_type, "created": created,
                            "data": {"object": object}}),
            payload_text: "{}".into(),
            object_text: None,
        }
    }

    /// The key the tests sign client references with.
    fn reference_key() -> crate::ClientReferenceKey {
        crate::ClientReferenceKey::new(&[42; 32]).expect("a key")
    }

    /// The projections' settings with the default metadata key; `verified`: whether a
    /// checkout's `client_reference_id` is verified (with [`reference_key`]) and may link.
    fn linking(verified: bool) -> crate::Projection {
        crate::Projection {
            stripe_org_metadata_key: "organization_id".into(),
            client_reference_key: verified.then(reference_key),
        }
    }

    fn only_change(plan: Plan) -> Change {
        match plan {
            Plan::Apply(mut changes) if changes.len() == 1 => changes.remove(0),
            other => panic!("expected one change, got {other:?}"),
        }
    }

    #[test]
    fn the_current_period_is_read_from_the_items_when_absent_at_the_top() {
        let object = json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "items": {"data": [{"id": "si_1", "quantity": 2,
                "current_period_start": 1_721_954_054, "current_period_end": 1_724_632_454,
                "price": {"id": "price_1", "product": "prod_1"}}]}
        });
        let Change::Subscription(sub) = only_change(project(
            &event("customer.subscription.updated", 10, object),
            &linking(false),
        )) else {
            panic!("subscription expected")
        };
        assert_eq!(sub.current_period_start, unix_seconds(1_721_954_054));
        assert_eq!(sub.current_period_end, unix_seconds(1_724_632_454));
        assert_eq!(sub.items[0]["price_id"], "price_1");
        assert_eq!(sub.items[0]["product_id"], "prod_1");
        assert_eq!(sub.items[0]["quantity"], 2);
        assert_eq!(sub.row.version.rank, Rank::Update);
    }

    #[test]
    fn a_listed_or_fetched_deleted_customer_stub_is_a_tombstone() {
        // What `GET /v1/customers/{id}` answers for a deleted customer: an update by how it
        // was seen, a deletion by what it says.
        let stub = json!({"id": "cus_1", "object": "customer", "deleted": true});
        let Change::Customer(customer) =
            customer((&stub).into(), 20, Seen::Updated, "organization_id").unwrap()
        else {
            panic!("a customer expected")
        };
        assert_eq!(customer.row.version.rank, Rank::Terminal);
        assert_eq!(customer.row.deleted_at, unix_seconds(20));
    }

    #[test]
    fn unknown_subscription_statuses_are_stored_as_they_come() {
        let object = json!({"id": "sub_1", "customer": "cus_1", "status": "some_future_status"});
        let Change::Subscription(sub) = only_change(project(
            &event("customer.subscription.updated", 10, object),
            &linking(false),
        )) else {
            panic!("subscription expected")
        };
        assert_eq!(sub.status, "some_future_status");
    }

    #[test]
    fn terminal_states_and_created_events_get_their_ranks() {
        let canceled = json!({"id": "sub_1", "customer": "cus_1", "status": "canceled"});
        let Change::Subscription(sub) = only_change(project(
            &event("customer.subscription.updated", 10, canceled),
            &linking(false),
        )) else {
            panic!()
        };
        assert_eq!(sub.row.version.rank, Rank::Terminal);
        let Change::Customer(created) = only_change(project(
            &event("customer.created", 10, json!({"id": "cus_1"})),
            &linking(false),
        )) else {
            panic!()
        };
        assert_eq!(created.row.version.rank, Rank::Initial);
    }

    /// The organization a completed checkout session links its customer to, and what named it,
    /// when `client_reference_id` is verified or not.
    fn linked_organization(session: Value, verified: bool) -> Option<(String, LinkedBy)> {
        match project(
            &event("checkout.session.completed", 10, session),
            &linking(verified),
        ) {
            Plan::Apply(changes) if changes.is_empty() => None,
            plan => match only_change(plan) {
                Change::CustomerLink(link) => Some((link.organization_id, link.linked_by)),
                other => panic!("a link expected, got {other:?}"),
            },
        }
    }

    #[test]
    fn checkout_metadata_wins_over_a_client_reference_id_naming_another_organization() {
        for trusted in [false, true] {
            assert_eq!(
                linked_organization(
                    json!({"id": "cs_1", "customer": "cus_1",
                        "client_reference_id": "org_from_the_browser",
                        "metadata": {"organization_id": "org_from_the_server"}}),
                    trusted
                ),
                Some(("org_from_the_server".into(), LinkedBy::Metadata))
            );
        }
    }

    #[test]
    fn a_client_reference_id_links_only_when_signed_and_unexpired_at_the_sessions_creation() {
        let signed = reference_key().sign("org_2", 1_000).expect("signed");
        let session = |reference: &str, created: i64| {
            json!({"id": "cs_2", "customer": "cus_2", "created": created,
                   "client_reference_id": reference, "metadata": {}})
        };
        assert_eq!(
            linked_organization(session(&signed, 1_000), false),
            None,
            "without the key, nothing is verified and nothing links"
        );
        assert_eq!(
            linked_organization(session(&signed, 1_000), true),
            Some(("org_2".into(), LinkedBy::ClientReference))
        );
        assert_eq!(
            linked_organization(session(&signed, 1_001), true),
            None,
            "a session created after the reference expired"
        );
        assert_eq!(
            linked_organization(session("org_2", 1_000), true),
            None,
            "the browser's word alone links nothing"
        );
        let mut without_created = session(&signed, 0);
        without_created
            .as_object_mut()
            .expect("object")
            .remove("created");
        assert_eq!(linked_organization(without_created, true), None);
    }

    #[test]
    fn checkout_links_by_metadata_when_there_is_no_client_reference_id() {
        let object = json!({"id": "cs_1", "customer": "cus_1", "client_reference_id": null,
                            "metadata": {"organization_id": "org_1"}});
        assert_eq!(
            only_change(project(
                &event("checkout.session.completed", 10, object),
                &linking(false)
            )),
            Change::CustomerLink(CustomerLink {
                customer_id: "cus_1".into(),
                organization_id: "org_1".into(),
                linked_by: LinkedBy::Metadata,
                livemode: false,
            })
        );
    }

    #[test]
    fn a_shape_we_cannot_read_fails_and_an_unknown_type_is_ignored() {
        assert!(matches!(
            project(
                &event("customer.subscription.updated", 10, json!({"id": "sub_1"})),
                &linking(false)
            ),
            Plan::Fail(_)
        ));
        assert_eq!(
            project(&event("invoice.created", 10, json!({})), &linking(false)),
            Plan::Ignore
        );
    }

    #[test]
    fn a_paid_one_time_checkout_records_the_credits_its_metadata_says_once_paid() {
        let session = |status: &str, credits: &str| {
            json!({"id": "cs_1", "object": "checkout.session", "mode": "payment",
                   "payment_status": status, "customer": "cus_1", "payment_intent": "pi_1",
                   "metadata": {"organization_id": "org_1", "billing_sync_credits": credits,
                                "billing_sync_price": "price_1", "billing_sync_quantity": "3"}})
        };
        let purchases = |object: Value| match project(
            &event("checkout.session.completed", 10, object),
            &linking(false),
        ) {
            Plan::Apply(changes) => changes
                .into_iter()
                .filter_map(|change| match change {
                    Change::CreditPurchase(purchase) => Some(purchase),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert!(
            purchases(session("unpaid", "300")).is_empty(),
            "not paid yet"
        );
        let paid = purchases(session("paid", "300"));
        assert_eq!(
            paid,
            vec![CreditPurchase {
                reference: "checkout:cs_1".into(),
                source: PurchaseSource::Checkout,
                customer_id: Some("cus_1".into()),
                organization_id: Some("org_1".into()),
                price_id: Some("price_1".into()),
                quantity: Some(3),
                credits: Some(300),
                expires_at: None,
                payment_id: Some("pi_1".into()),
            }]
        );
        assert!(
            purchases(session("paid", "0")).is_empty(),
            "billing-sync's own purchase of a price without credits"
        );
        // A 100 % coupon: nothing to pay, the credits bought all the same (no payment to
        // refund later).
        let mut free = session("no_payment_required", "300");
        free["payment_intent"] = Value::Null;
        assert_eq!(
            purchases(free),
            vec![CreditPurchase {
                payment_id: None,
                ..paid[0].clone()
            }]
        );
        let mut elsewhere = session("paid", "1");
        elsewhere["metadata"] = json!({"organization_id": "org_1"});
        assert!(needs_line_items(&elsewhere));
        assert!(
            matches!(
                project(&event("checkout.session.completed", 10, elsewhere), &linking(false)),
                Plan::Fail(reason) if reason.contains("STRIPE_SECRET_KEY")
            ),
            "a session billing-sync did not create waits for its line items"
        );
        for bad in ["-5", "1.5", "lots"] {
            assert!(
                matches!(
                    project(
                        &event("checkout.session.completed", 10, session("paid", bad)),
                        &linking(false)
                    ),
                    Plan::Fail(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_paid_invoice_records_an_allowance_per_subscription_line_but_no_proration() {
        let line = |id: &str, proration: bool| {
            json!({"id": id, "quantity": 2, "period": {"start": 100, "end": 200},
                   "parent": {"subscription_item_details": {"proration": proration}},
                   "pricing": {"price_details": {"price": "price_1"}}})
        };
        let invoice = json!({"id": "in_1", "customer": "cus_1", "payment_intent": "pi_1",
            "parent": {"subscription_details": {"metadata": {"organization_id": "org_1"}}},
            "lines": {"has_more": false, "data": [line("il_1", false), line("il_2", true)]}});
        let Plan::Apply(changes) =
            project(&event("invoice.paid", 10, invoice.clone()), &linking(false))
        else {
            panic!("applied");
        };
        assert_eq!(
            changes,
            vec![Change::CreditPurchase(CreditPurchase {
                reference: "invoice:in_1:il_1".into(),
                source: PurchaseSource::Invoice,
                customer_id: Some("cus_1".into()),
                organization_id: Some("org_1".into()),
                price_id: Some("price_1".into()),
                quantity: Some(2),
                credits: None,
                expires_at: Some(200),
                payment_id: Some("pi_1".into()),
            })]
        );
        let mut paginated = invoice;
        paginated["lines"]["has_more"] = json!(true);
        assert!(matches!(
            project(&event("invoice.paid", 10, paginated), &linking(false)),
            Plan::Fail(_)
        ));
    }

    #[test]
    fn a_refunded_charge_records_its_cumulative_refund() {
        let charge = json!({"id": "ch_1", "payment_intent": "pi_1", "amount": 3000,
                            "amount_captured": 3000, "amount_refunded": 1500});
        assert_eq!(
            project(&event("charge.refunded", 10, charge), &linking(false)),
            Plan::Apply(vec![Change::ChargeRefund(ChargeRefund {
                charge_id: "ch_1".into(),
                payment_id: "pi_1".into(),
                paid: 3000,
                refunded: 1500,
            })])
        );
        let without_payment = json!({"id": "ch_2", "amount": 100, "amount_refunded": 100});
        assert_eq!(
            project(
                &event("charge.refunded", 10, without_payment),
                &linking(false)
            ),
            Plan::Apply(Vec::new()),
            "a charge of no payment bought no credits"
        );
    }

    #[test]
    fn a_price_is_read_with_its_recurrence_and_a_deleted_one_is_terminal() {
        let object = json!({"id": "price_1", "object": "price", "active": true,
            "currency": "eur", "unit_amount": 2900, "product": {"id": "prod_1"},
            "lookup_key": "team_monthly", "nickname": "Team",
            "recurring": {"interval": "month", "interval_count": 3}});
        let Change::Price(price) = only_change(project(
            &event("price.updated", 10, object.clone()),
            &linking(false),
        )) else {
            panic!("a price expected")
        };
        assert_eq!(
            price.product_id, "prod_1",
            "an expanded product is read by id"
        );
        assert_eq!(price.recurring_interval.as_deref(), Some("month"));
        assert_eq!(price.recurring_interval_count, Some(3));
        assert_eq!(price.unit_amount, Some(2900));
        assert_eq!(price.row.version.rank, Rank::Update);
        let Change::Price(deleted) = only_change(project(
            &event("price.deleted", 11, object),
            &linking(false),
        )) else {
            panic!("a price expected")
        };
        assert_eq!(deleted.row.version.rank, Rank::Terminal);
        assert!(deleted.row.deleted_at.is_some());
    }

    #[test]
    fn a_product_keeps_its_marketing_feature_names_in_order() {
        let object = json!({"id": "prod_1", "active": false, "name": "Team",
            "marketing_features": [{"name": "SSO"}, {}, {"name": "Audit log"}]});
        let Change::Product(product) = only_change(project(
            &event("product.created", 10, object),
            &linking(false),
        )) else {
            panic!("a product expected")
        };
        assert_eq!(product.marketing_features, json!(["SSO", "Audit log"]));
        assert!(!product.active, "archived");
        assert_eq!(product.row.version.rank, Rank::Initial);
    }

    #[test]
    fn an_entitlement_summary_is_the_sorted_list_of_lookup_keys_and_a_partial_one_fails() {
        let summary = |has_more: bool| {
            json!({"object": "entitlements.active_entitlement_summary", "customer": "cus_1",
                "entitlements": {"object": "list", "has_more": has_more, "data": [
                    {"id": "ent_2", "lookup_key": "sso"}, {"id": "ent_1", "lookup_key": "audit"},
                    {"id": "ent_3", "lookup_key": "sso"}]}})
        };
        let event_type = "entitlements.active_entitlement_summary.updated";
        let Change::Entitlements(entitlements) = only_change(project(
            &event(event_type, 10, summary(false)),
            &linking(false),
        )) else {
            panic!("entitlements expected")
        };
        assert_eq!(entitlements.row.id, "cus_1");
        assert_eq!(entitlements.lookup_keys, json!(["audit", "sso"]));
        assert!(matches!(
            project(&event(event_type, 10, summary(true)), &linking(false)),
            Plan::Fail(_)
        ));
    }
}
