//! Linked event scenarios written for our tests (not the shared fixtures): the life of one
//! organization's billing in Stripe, and of one organization's members in Clerk, in time order.
//!
//! Every id is suffixed with a namespace so that many copies of a scenario can share one
//! database without touching each other's rows.

use billing_sync_projection::Provider;
use serde_json::{Value, json};

/// One event of a scenario, as its provider would deliver it.
#[derive(Clone, Debug)]
pub struct ScenarioEvent {
    /// Who sends it.
    pub provider: Provider,
    /// `evt_…` or the `svix-id`.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// Stripe's `created`, or Clerk's `svix-timestamp` (unix seconds).
    pub timestamp: i64,
    /// The event body.
    pub payload: Value,
}

/// The Stripe scenario's object ids for namespace `ns`.
pub struct StripeIds {
    /// The Clerk organization that the customer bills.
    pub organization: String,
    /// `cus_…`.
    pub customer: String,
    /// `sub_…`.
    pub subscription: String,
}

impl StripeIds {
    /// The ids of namespace `ns`.
    pub fn new(ns: &str) -> Self {
        StripeIds {
            organization: format!("org_{ns}"),
            customer: format!("cus_{ns}"),
            subscription: format!("sub_{ns}"),
        }
    }
}

const T0: i64 = 1_721_954_050;

fn stripe_event(
    ns: &str,
    n: usize,
    event_type: &str,
    created: i64,
    object: Value,
) -> ScenarioEvent {
    let event_id = format!("evt_{ns}_{n:02}");
    ScenarioEvent {
        provider: Provider::Stripe,
        event_id: event_id.clone(),
        event_type: event_type.into(),
        timestamp: created,
        payload: json!({
            "id": event_id, "object": "event", "api_version": "2026-07-29.dahlia",
            "created": created, "data": {"object": object}, "livemode": false,
            "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
            "type": event_type,
        }),
    }
}

fn customer(ids: &StripeIds, email: &str, with_org: bool) -> Value {
    let metadata = if with_org {
        json!({"organization_id": ids.organization})
    } else {
        json!({})
    };
    json!({"id": ids.customer, "object": "customer", "created": T0, "email": email,
           "name": "Acme Corp", "livemode": false, "metadata": metadata,
           "some_future_field": {"nested": true}})
}

fn subscription(
    ids: &StripeIds,
    status: &str,
    cancel_at_period_end: bool,
    canceled: Option<i64>,
) -> Value {
    json!({
        "id": ids.subscription, "object": "subscription", "customer": ids.customer,
        "status": status, "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": if cancel_at_period_end { Some(T0 + 2_678_404) } else { None },
        "canceled_at": canceled, "ended_at": canceled, "trial_end": null,
        "livemode": false, "metadata": {}, "created": T0 + 4,
        "items": {"object": "list", "data": [{
            "id": format!("si_{}", ids.subscription), "object": "subscription_item", "quantity": 1,
            "current_period_start": T0 + 4, "current_period_end": T0 + 2_678_404,
            "price": {"id": "price_monthly", "product": "prod_myproduct", "unit_amount": 2000}
        }]}
    })
}

/// customer created and updated in the same second (the update adds the organization), a
/// subscription created `incomplete` and activated in the same second, a checkout that links
/// the customer, an ignored invoice, cancel at period end, cancellation (with a stale update in
/// the same second), customer deleted.
pub fn stripe_lifecycle(ns: &str) -> Vec<ScenarioEvent> {
    let ids = StripeIds::new(ns);
    let checkout = json!({
        "id": format!("cs_{ns}"), "object": "checkout.session", "mode": "subscription",
        "customer": ids.customer, "client_reference_id": ids.organization,
        "metadata": {"organization_id": ids.organization}, "subscription": ids.subscription,
        "livemode": false, "status": "complete",
    });
    let invoice = json!({"id": format!("in_{ns}"), "object": "invoice", "customer": ids.customer});
    let mut deleted_customer = customer(&ids, "billing@acme.example", true);
    deleted_customer["deleted"] = json!(true);
    vec![
        stripe_event(
            ns,
            0,
            "customer.created",
            T0,
            customer(&ids, "first@acme.example", false),
        ),
        stripe_event(
            ns,
            1,
            "customer.updated",
            T0,
            customer(&ids, "billing@acme.example", true),
        ),
        stripe_event(
            ns,
            2,
            "customer.subscription.created",
            T0 + 4,
            subscription(&ids, "incomplete", false, None),
        ),
        stripe_event(
            ns,
            3,
            "customer.subscription.updated",
            T0 + 4,
            subscription(&ids, "active", false, None),
        ),
        stripe_event(ns, 4, "checkout.session.completed", T0 + 8, checkout),
        stripe_event(ns, 5, "invoice.paid", T0 + 6, invoice),
        stripe_event(
            ns,
            6,
            "customer.subscription.updated",
            T0 + 86_400,
            subscription(&ids, "active", true, None),
        ),
        stripe_event(
            ns,
            7,
            "customer.subscription.deleted",
            T0 + 2_678_404,
            subscription(&ids, "canceled", true, Some(T0 + 2_678_404)),
        ),
        stripe_event(ns, 8, "customer.deleted", T0 + 2_764_804, deleted_customer),
        // Sent in the same second as the deletion, still saying `active`: the terminal state
        // must win the tie.
        stripe_event(
            ns,
            9,
            "customer.subscription.updated",
            T0 + 2_678_404,
            subscription(&ids, "active", true, None),
        ),
    ]
}

/// A customer as Stripe's API version 2026 sends it, every field present (about 1.3 KB).
fn full_customer(ids: &StripeIds, created: i64) -> Value {
    json!({
        "id": ids.customer, "object": "customer", "address": {
            "city": "Berlin", "country": "DE", "line1": "Friedrichstraße 123", "line2": null,
            "postal_code": "10117", "state": null},
        "balance": 0, "business_name": null, "cash_balance": null, "created": created,
        "currency": "eur", "customer_account": null, "default_source": null,
        "delinquent": false, "description": null, "discount": null,
        "email": format!("billing+{}@acme.example", ids.customer),
        "individual_name": null, "invoice_credit_balance": {},
        "invoice_prefix": "8F2A41C7", "invoice_settings": {"custom_fields": null,
            "default_payment_method": format!("pm_{}", ids.customer), "footer": null,
            "rendering_options": null},
        "livemode": false, "metadata": {"organization_id": ids.organization,
            "plan_source": "pricing_page"},
        "name": "Acme Corporation GmbH", "next_invoice_sequence": 2, "phone": "+49 30 1234567",
        "preferred_locales": ["de-DE", "en"], "shipping": null, "tax_exempt": "none",
        "test_clock": null
    })
}

/// A subscription as Stripe's API version 2026 sends it, with its item's full price and every
/// top-level field present: 3 KB or so, the size of the real events.
fn full_subscription(ids: &StripeIds, status: &str, period_start: i64, quantity: i64) -> Value {
    let period_end = period_start + 2_678_400;
    let price = json!({
        "id": "price_1PgafmB7WZ01zgkWSY0r5Q3M", "object": "price", "active": true,
        "billing_scheme": "per_unit", "created": T0 - 86_400, "currency": "eur",
        "custom_unit_amount": null, "livemode": false, "lookup_key": "team_monthly",
        "metadata": {"tier": "team"}, "nickname": "Team (monthly)",
        "product": "prod_QXfz7Y8ZkRTnqP", "recurring": {"interval": "month",
            "interval_count": 1, "meter": null, "trial_period_days": null,
            "usage_type": "licensed"},
        "tax_behavior": "exclusive", "tiers_mode": null, "transform_quantity": null,
        "type": "recurring", "unit_amount": 2900, "unit_amount_decimal": "2900"
    });
    json!({
        "id": ids.subscription, "object": "subscription", "application": null,
        "application_fee_percent": null, "automatic_tax": {"disabled_reason": null,
            "enabled": true, "liability": {"type": "self"}},
        "billing_cycle_anchor": T0 + 4, "billing_cycle_anchor_config": null,
        "billing_mode": {"type": "flexible", "updated_at": T0 + 4},
        "billing_thresholds": null, "cancel_at": null, "cancel_at_period_end": false,
        "canceled_at": null, "cancellation_details": {"comment": null, "feedback": null,
            "reason": null},
        "collection_method": "charge_automatically", "created": T0 + 4, "currency": "eur",
        "customer": ids.customer, "customer_account": null, "days_until_due": null,
        "default_payment_method": format!("pm_{}", ids.customer), "default_source": null,
        "default_tax_rates": [], "description": null, "discounts": [], "ended_at": null,
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": {"object": "list", "data": [{
            "id": format!("si_{}", ids.subscription), "object": "subscription_item",
            "billing_thresholds": null, "created": T0 + 4,
            "current_period_end": period_end, "current_period_start": period_start,
            "discounts": [], "metadata": {}, "plan": {
                "id": "price_1PgafmB7WZ01zgkWSY0r5Q3M", "object": "plan", "active": true,
                "amount": 2900, "amount_decimal": "2900", "billing_scheme": "per_unit",
                "created": T0 - 86_400, "currency": "eur", "interval": "month",
                "interval_count": 1, "livemode": false, "metadata": {"tier": "team"},
                "meter": null, "nickname": "Team (monthly)", "product": "prod_QXfz7Y8ZkRTnqP",
                "tiers_mode": null, "transform_usage": null, "trial_period_days": null,
                "usage_type": "licensed"},
            "price": price, "quantity": quantity, "subscription": ids.subscription,
            "tax_rates": []}],
            "has_more": false, "total_count": 1,
            "url": format!("/v1/subscription_items?subscription={}", ids.subscription)},
        "latest_invoice": format!("in_{}", ids.subscription), "livemode": false,
        "metadata": {"organization_id": ids.organization}, "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null, "pause_collection": null, "payment_settings": {
            "payment_method_options": {"card": {"network": null, "request_three_d_secure": "automatic"}},
            "payment_method_types": ["card", "sepa_debit"], "save_default_payment_method": "on_subscription"},
        "pending_invoice_item_interval": null, "pending_setup_intent": null,
        "pending_update": null, "schedule": null, "start_date": T0 + 4, "status": status,
        "test_clock": null, "transfer_data": null, "trial_end": null,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": null
    })
}

/// `count` distinct events: copies of [`subscription_lifecycle`], each in its own namespace
/// (`{tag}000000`, `{tag}000001`, …: its own customer and organization), the last one cut short.
pub fn subscription_lifecycles(tag: &str, count: usize) -> Vec<ScenarioEvent> {
    let mut events = Vec::with_capacity(count);
    let mut copy = 0;
    while events.len() < count {
        events.extend(subscription_lifecycle(&format!("{tag}{copy:06}")));
        copy += 1;
    }
    events.truncate(count);
    events
}

/// One customer's subscription life as Stripe sends it, in bodies of realistic size (2–4 KB):
/// customer created, subscription created `incomplete`, activated, five updates (renewals and
/// seat changes a month apart), then deleted. Eight events, the benchmark's unit.
pub fn subscription_lifecycle(ns: &str) -> Vec<ScenarioEvent> {
    let ids = StripeIds::new(ns);
    let mut events = vec![
        stripe_event(ns, 0, "customer.created", T0, full_customer(&ids, T0)),
        stripe_event(
            ns,
            1,
            "customer.subscription.created",
            T0 + 4,
            full_subscription(&ids, "incomplete", T0 + 4, 1),
        ),
    ];
    for month in 0..5 {
        let period_start = T0 + 4 + month * 2_678_400;
        events.push(stripe_event(
            ns,
            2 + month as usize,
            "customer.subscription.updated",
            period_start + 5,
            full_subscription(&ids, "active", period_start, 1 + month),
        ));
    }
    let ended = T0 + 4 + 5 * 2_678_400;
    let mut canceled = full_subscription(&ids, "canceled", ended - 2_678_400, 5);
    canceled["canceled_at"] = json!(ended);
    canceled["ended_at"] = json!(ended);
    events.push(stripe_event(
        ns,
        7,
        "customer.subscription.deleted",
        ended,
        canceled,
    ));
    events
}

fn catalog_product(ns: &str, name: &str, active: bool, features: &[&str]) -> Value {
    json!({"id": format!("prod_{ns}"), "object": "product", "active": active, "name": name,
           "description": null, "default_price": null, "livemode": false, "metadata": {},
           "marketing_features": features.iter().map(|f| json!({"name": f})).collect::<Vec<_>>()})
}

fn catalog_price(ns: &str, amount: i64, active: bool) -> Value {
    json!({"id": format!("price_{ns}"), "object": "price", "active": active, "currency": "eur",
           "unit_amount": amount, "product": format!("prod_{ns}"), "livemode": false,
           "lookup_key": format!("team_{ns}"), "nickname": null, "type": "recurring",
           "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}})
}

fn entitlement_summary(ns: &str, keys: &[&str]) -> Value {
    json!({"object": "entitlements.active_entitlement_summary", "customer": format!("cus_{ns}"),
           "livemode": false, "entitlements": {"object": "list", "has_more": false,
           "url": "/v1/customer/entitlements",
           "data": keys.iter().map(|k| json!({"id": format!("ent_{k}"),
               "object": "entitlements.active_entitlement", "feature": format!("feat_{k}"),
               "livemode": false, "lookup_key": k})).collect::<Vec<_>>()}})
}

/// The catalog and a customer's entitlements over time: a product created and renamed in the
/// same second, archived, then deleted (with a stale update in the same second); its price
/// created, repriced, archived and deleted; three entitlement summaries, the last one empty.
pub fn catalog_lifecycle(ns: &str) -> Vec<ScenarioEvent> {
    let mut n = 0;
    let mut event = |event_type: &str, created: i64, object: Value| {
        n += 1;
        stripe_event(ns, n, event_type, created, object)
    };
    vec![
        event(
            "product.created",
            T0,
            catalog_product(ns, "Team", true, &["SSO"]),
        ),
        event(
            "product.updated",
            T0,
            catalog_product(ns, "Team+", true, &["SSO", "Audit"]),
        ),
        event("price.created", T0 + 1, catalog_price(ns, 2_900, true)),
        event("price.updated", T0 + 60, catalog_price(ns, 3_900, true)),
        event(
            "entitlements.active_entitlement_summary.updated",
            T0 + 100,
            entitlement_summary(ns, &["sso"]),
        ),
        event(
            "entitlements.active_entitlement_summary.updated",
            T0 + 200,
            entitlement_summary(ns, &["sso", "audit"]),
        ),
        event(
            "product.updated",
            T0 + 300,
            catalog_product(ns, "Team+", false, &[]),
        ),
        event("price.updated", T0 + 300, catalog_price(ns, 3_900, false)),
        event("price.deleted", T0 + 400, catalog_price(ns, 3_900, false)),
        event(
            "product.deleted",
            T0 + 500,
            catalog_product(ns, "Team+", false, &[]),
        ),
        // In the second of the deletion, still saying active: the deletion wins the tie.
        event(
            "product.updated",
            T0 + 500,
            catalog_product(ns, "Team+", true, &[]),
        ),
        event(
            "entitlements.active_entitlement_summary.updated",
            T0 + 600,
            entitlement_summary(ns, &[]),
        ),
    ]
}

/// The Clerk scenario's object ids for namespace `ns`.
pub struct ClerkIds {
    /// The organization that lives on.
    pub organization: String,
    /// The organization created and deleted.
    pub short_lived_organization: String,
    /// The member whose membership is updated and then deleted.
    pub member: String,
    /// The member who stays.
    pub admin: String,
}

impl ClerkIds {
    /// The ids of namespace `ns`.
    pub fn new(ns: &str) -> Self {
        ClerkIds {
            organization: format!("org_{ns}"),
            short_lived_organization: format!("org_short_{ns}"),
            member: format!("user_member_{ns}"),
            admin: format!("user_admin_{ns}"),
        }
    }
}

/// Milliseconds: Clerk's `*_at`.
const C0: i64 = 1_716_883_200_000;

fn clerk_event(ns: &str, n: usize, event_type: &str, svix_ts: i64, data: Value) -> ScenarioEvent {
    ScenarioEvent {
        provider: Provider::Clerk,
        event_id: format!("msg_{ns}_{n:02}"),
        event_type: event_type.into(),
        timestamp: svix_ts,
        payload: json!({"data": data, "object": "event", "type": event_type,
                        "timestamp": svix_ts * 1000, "instance_id": "ins_test"}),
    }
}

fn organization(id: &str, name: &str, created_at: i64, updated_at: i64) -> Value {
    json!({"object": "organization", "id": id, "name": name, "slug": name.to_lowercase().replace(' ', "-"),
           "created_at": created_at, "updated_at": updated_at, "members_count": 2})
}

fn user(id: &str, email: &str, created_at: i64, updated_at: i64) -> Value {
    json!({"object": "user", "id": id, "first_name": "Jane", "last_name": "Doe",
           "primary_email_address_id": format!("idn_{id}"),
           "email_addresses": [{"id": "idn_other", "email_address": "other@example.com"},
                               {"id": format!("idn_{id}"), "email_address": email}],
           "created_at": created_at, "updated_at": updated_at})
}

fn membership(
    id: &str,
    org: &Value,
    user_id: &str,
    role: &str,
    created_at: i64,
    updated_at: i64,
) -> Value {
    json!({"object": "organization_membership", "id": id, "role": role, "organization": org,
           "public_user_data": {"user_id": user_id, "first_name": "Jane", "last_name": "Doe",
                                "identifier": format!("{user_id}@example.com")},
           "created_at": created_at, "updated_at": updated_at})
}

/// An organization with an admin and a member: created, renamed, the member promoted and then
/// removed; the admin's user updated. A second organization is created and deleted, and its
/// creation is delivered again late under a new message id.
pub fn clerk_lifecycle(ns: &str) -> Vec<ScenarioEvent> {
    clerk_lifecycle_at(ns, C0)
}

/// [`clerk_lifecycle`] starting at `c0` (unix milliseconds) instead of a fixed past time, for
/// deliveries over HTTP, whose `svix-timestamp` must be within five minutes of now.
pub fn clerk_lifecycle_at(ns: &str, c0: i64) -> Vec<ScenarioEvent> {
    let ids = ClerkIds::new(ns);
    let s = c0 / 1000;
    let org_v1 = organization(&ids.organization, "Acme Corp", c0, c0);
    let org_v2 = organization(&ids.organization, "Acme Corp Renamed", c0, c0 + 10_000);
    let short_org = organization(&ids.short_lived_organization, "Short Lived", c0, c0 + 5_000);
    let member_id = format!("orgmem_member_{ns}");
    let admin_id = format!("orgmem_admin_{ns}");
    // The member made admin; its deletion carries the same object.
    let promoted = membership(
        &member_id,
        &org_v2,
        &ids.member,
        "org:admin",
        c0 + 2,
        c0 + 12_000,
    );
    let mut events = vec![
        clerk_event(ns, 0, "organization.created", s, org_v1.clone()),
        clerk_event(
            ns,
            1,
            "user.created",
            s + 1,
            user(&ids.admin, "admin@acme.example", c0, c0 + 1_000),
        ),
        clerk_event(
            ns,
            2,
            "user.created",
            s + 1,
            user(&ids.member, "member@acme.example", c0, c0 + 1_500),
        ),
        clerk_event(
            ns,
            3,
            "organizationMembership.created",
            s + 2,
            membership(
                &admin_id,
                &org_v1,
                &ids.admin,
                "org:admin",
                c0 + 2,
                c0 + 2_000,
            ),
        ),
        clerk_event(
            ns,
            4,
            "organizationMembership.created",
            s + 3,
            membership(
                &member_id,
                &org_v1,
                &ids.member,
                "org:member",
                c0 + 2,
                c0 + 3_000,
            ),
        ),
        clerk_event(ns, 5, "organization.created", s + 5, short_org.clone()),
        clerk_event(ns, 6, "organization.updated", s + 10, org_v2.clone()),
        clerk_event(
            ns,
            7,
            "organizationMembership.updated",
            s + 12,
            promoted.clone(),
        ),
        clerk_event(
            ns,
            8,
            "user.updated",
            s + 13,
            user(&ids.admin, "admin-new@acme.example", c0, c0 + 13_000),
        ),
        // Clerk's deleted membership carries the updated_at of its last update.
        clerk_event(
            ns,
            9,
            "organizationMembership.deleted",
            s + 20,
            promoted.clone(),
        ),
        clerk_event(
            ns,
            10,
            "organization.deleted",
            s + 30,
            json!({"object": "organization", "id": ids.short_lived_organization, "slug": "short-lived", "deleted": true}),
        ),
    ];
    // The creation of the deleted organization, delivered again after its deletion.
    events.push(clerk_event(
        ns,
        11,
        "organization.created",
        s + 40,
        short_org,
    ));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_lifecycle_bodies_are_the_size_stripe_sends() {
        let events = subscription_lifecycle("size");
        assert_eq!(events.len(), 8);
        for event in &events {
            let size = serde_json::to_vec(&event.payload).expect("JSON").len();
            let range = if event.event_type.starts_with("customer.subscription.") {
                2_048..4_096
            } else {
                1_024..4_096
            };
            assert!(range.contains(&size), "{}: {size} bytes", event.event_type);
        }
    }
}
