//! What Stripe's API adds to an event before it is applied: the current state of its customer
//! or subscription (`STRIPE_REFETCH_OBJECTS`, live deliveries only: a replay applies the
//! recorded payload, which the ordering rules place), and the line items of a checkout session
//! whose purchase is only there (live deliveries and replays alike: without them the purchase
//! cannot be known).

use billing_sync_projection::stripe::Carried;
use billing_sync_projection::{NewEvent, Plan, Projection, Seen};
use billing_sync_stripe_api::{StripeClient, StripeError};
use billing_sync_upstream::RetryPolicy;
use serde_json::Value;

/// What the event's customer or subscription changes as Stripe has it now: its current state,
/// fetched now and seen as an update (a deleted customer as a deletion) at the fetch time, so
/// the newest fetch wins whatever the delivery order. `None` for events that are not about a
/// customer or subscription, or whose object Stripe no longer has (then the payload is used).
pub(crate) async fn refetched(
    client: &StripeClient,
    event: &NewEvent,
    projection: &Projection,
    fetched_at: i64,
) -> Result<Option<Plan>, StripeError> {
    let carried = Carried::by(&event.event_type);
    let is_customer = carried == Some(Carried::Customer);
    let is_subscription = carried == Some(Carried::Subscription);
    let id = event
        .payload
        .get("data")
        .and_then(|data| data.get("object"))
        .and_then(|object| object.get("id"))
        .and_then(Value::as_str)
        // An id Stripe could not have written is projected from the payload, as delivered.
        .filter(|id| billing_sync_stripe_api::is_object_id(id));
    let (resource, id) = match (is_customer, is_subscription, id) {
        (true, _, Some(id)) => ("customers", id),
        (_, true, Some(id)) => ("subscriptions", id),
        _ => return Ok(None),
    };
    let object = match client.retrieve(resource, id).await {
        Ok(object) => object,
        Err(StripeError::Api { status: 404, .. }) => {
            tracing::warn!(
                resource,
                id,
                "Stripe no longer has the object; projecting the payload"
            );
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let key = &projection.stripe_org_metadata_key;
    let change = if is_customer {
        billing_sync_projection::stripe::customer((&object).into(), fetched_at, Seen::Updated, key)
    } else {
        billing_sync_projection::stripe::subscription(
            (&object).into(),
            fetched_at,
            Seen::Updated,
            key,
        )
    };
    Ok(Some(match change {
        Ok(change) => Plan::Apply(vec![change]),
        Err(reason) => Plan::Fail(reason),
    }))
}

/// The plan of a checkout event whose purchase is only in the session's line items (see
/// `stripe::needs_line_items`), read from Stripe with `client` under `policy` (interactive on a
/// live delivery, whose sender is waiting; patient on a replay); `None` for any other event.
pub(crate) async fn line_items_plan(
    client: &StripeClient,
    policy: RetryPolicy,
    event: &NewEvent,
    projection: &Projection,
) -> Result<Option<Plan>, StripeError> {
    if Carried::by(&event.event_type) != Some(Carried::CheckoutSession) {
        return Ok(None);
    }
    let Some(session) = event
        .payload
        .get("data")
        .and_then(|data| data.get("object"))
        .filter(|session| billing_sync_projection::stripe::needs_line_items(session))
    else {
        return Ok(None);
    };
    let Some(id) = session.get("id").and_then(Value::as_str) else {
        return Ok(None);
    };
    if !billing_sync_stripe_api::is_object_id(id) {
        return Ok(Some(Plan::Fail(format!(
            "the checkout session id {id:?} is not a Stripe object id: its line items cannot be read"
        ))));
    }
    let page = match client
        .list_page_under(
            policy,
            &["checkout", "sessions", id, "line_items"],
            &[("limit", "100")],
        )
        .await
    {
        Ok(page) => page,
        Err(StripeError::Api { status: 404, .. }) => {
            return Ok(Some(Plan::Fail(format!(
                "Stripe has no checkout session {id} to read its line items from"
            ))));
        }
        Err(err) => return Err(err),
    };
    if page.has_more {
        return Ok(Some(Plan::Fail(format!(
            "checkout session {id} has more than 100 line items"
        ))));
    }
    Ok(Some(
        billing_sync_projection::stripe::project_with_line_items(event, projection, &page.data),
    ))
}
