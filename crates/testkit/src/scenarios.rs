//! Linked event scenarios written for our tests (not the shared fixtures): the life of one
//! organization's billing in Stripe, and of one organization's members in Clerk, in time order.
//!
//! Every id is suffixed with a namespace so that many copies of a scenario can share one
//! database without touching each other's rows.

use serde_json::{Value, json};

/// One event of a scenario, as its provider would deliver it.
#[derive(Clone, Debug)]
pub struct ScenarioEvent {
    /// `stripe` or `clerk`.
    pub provider: &'static str,
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
        provider: "stripe",
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
        provider: "clerk",
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
            membership(
                &member_id,
                &org_v2,
                &ids.member,
                "org:admin",
                c0 + 2,
                c0 + 12_000,
            ),
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
            membership(
                &member_id,
                &org_v2,
                &ids.member,
                "org:admin",
                c0 + 2,
                c0 + 12_000,
            ),
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
