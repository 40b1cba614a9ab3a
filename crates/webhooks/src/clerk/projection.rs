//! Clerk events (`{data, object: "event", type, …}`) → changes to the synced state.
//!
//! Ordering: a state's key is `data.updated_at` (ms). `organization.deleted` and `user.deleted`
//! carry no `updated_at`, and a deleted membership's is that of its last update, so a deletion
//! is keyed by the later of its `updated_at` and the delivery's `svix-timestamp` (a deletion is
//! sent no earlier than it happened). The top-level `timestamp` is not used: its unit differs
//! between Clerk's own examples.

use billing_sync_store::ledger::{NewEvent, Plan};
use billing_sync_store::sync::{
    Change, MembershipState, OrganizationState, Rank, UserState, Version,
};
use serde_json::Value;

use crate::json::{integer, required_text, text, unix_seconds};

/// What `event` changes. `event.event_created` is the delivery's `svix-timestamp`.
pub fn project(event: &NewEvent) -> Plan {
    let result = match event.event_type.as_str() {
        "organization.created" | "organization.updated" => data(event).and_then(organization),
        "organization.deleted" => data(event).and_then(|data| organization_deleted(data, event)),
        "user.created" | "user.updated" => data(event).and_then(user),
        "user.deleted" => data(event).and_then(|data| user_deleted(data, event)),
        "organizationMembership.created" | "organizationMembership.updated" => {
            data(event).and_then(|data| membership(data, None))
        }
        "organizationMembership.deleted" => {
            data(event).and_then(|data| membership(data, Some(event)))
        }
        _ => return Plan::Ignore,
    };
    match result {
        Ok(changes) => Plan::Apply(changes),
        Err(reason) => Plan::Fail(reason),
    }
}

fn data(event: &NewEvent) -> Result<&Value, String> {
    event
        .payload
        .get("data")
        .filter(|data| data.is_object())
        .ok_or_else(|| "event has no object `data`".to_owned())
}

fn updated_at(data: &Value, what: &str) -> Result<i64, String> {
    integer(data, "updated_at").ok_or_else(|| format!("{what} has no integer `updated_at`"))
}

/// The key of a deletion: the later of the object's `updated_at` and the delivery time.
fn deletion_version(data: &Value, event: &NewEvent) -> Result<(Version, i64), String> {
    let delivered_secs = event
        .event_created
        .ok_or_else(|| "deletion has no delivery timestamp".to_owned())?;
    let key = integer(data, "updated_at")
        .unwrap_or(0)
        .max(delivered_secs.saturating_mul(1000));
    Ok((
        Version {
            key,
            rank: Rank::Terminal,
        },
        delivered_secs,
    ))
}

fn organization(data: &Value) -> Result<Vec<Change>, String> {
    Ok(vec![Change::Organization(organization_state(
        data,
        Rank::Update,
    )?)])
}

fn organization_state(data: &Value, rank: Rank) -> Result<OrganizationState, String> {
    Ok(OrganizationState {
        id: required_text(data, "id", "organization")?,
        name: text(data, "name"),
        slug: text(data, "slug"),
        raw: data.clone(),
        version: Version {
            key: updated_at(data, "organization")?,
            rank,
        },
        deleted_at: None,
    })
}

fn organization_deleted(data: &Value, event: &NewEvent) -> Result<Vec<Change>, String> {
    let (version, deleted_secs) = deletion_version(data, event)?;
    // A tombstone holds what the deletion carried (a stub), so its content does not depend
    // on which earlier events happened to arrive before it.
    Ok(vec![Change::Organization(OrganizationState {
        id: required_text(data, "id", "deleted organization")?,
        name: text(data, "name"),
        slug: text(data, "slug"),
        raw: data.clone(),
        version,
        deleted_at: unix_seconds(deleted_secs),
    })])
}

fn primary_email(data: &Value) -> Option<String> {
    let primary_id = text(data, "primary_email_address_id")?;
    data.get("email_addresses")?
        .as_array()?
        .iter()
        .find(|address| text(address, "id").as_deref() == Some(primary_id.as_str()))
        .and_then(|address| text(address, "email_address"))
}

fn user(data: &Value) -> Result<Vec<Change>, String> {
    Ok(vec![Change::User(UserState {
        id: required_text(data, "id", "user")?,
        primary_email: primary_email(data),
        first_name: text(data, "first_name"),
        last_name: text(data, "last_name"),
        raw: data.clone(),
        version: Version {
            key: updated_at(data, "user")?,
            rank: Rank::Update,
        },
        deleted_at: None,
    })])
}

fn user_deleted(data: &Value, event: &NewEvent) -> Result<Vec<Change>, String> {
    let (version, deleted_secs) = deletion_version(data, event)?;
    Ok(vec![Change::User(UserState {
        id: required_text(data, "id", "deleted user")?,
        primary_email: None,
        first_name: None,
        last_name: None,
        raw: data.clone(),
        version,
        deleted_at: unix_seconds(deleted_secs),
    })])
}

/// A membership, plus the organization and user snapshots it embeds. `deletion` is the event
/// when the membership was deleted.
fn membership(data: &Value, deletion: Option<&NewEvent>) -> Result<Vec<Change>, String> {
    let organization = data
        .get("organization")
        .filter(|org| org.is_object())
        .ok_or_else(|| "membership has no `organization`".to_owned())?;
    let public_user = data
        .get("public_user_data")
        .filter(|user| user.is_object())
        .ok_or_else(|| "membership has no `public_user_data`".to_owned())?;
    let organization_id = required_text(organization, "id", "membership's organization")?;
    let user_id = required_text(public_user, "user_id", "membership's public_user_data")?;
    let (version, deleted_at) = match deletion {
        Some(event) => {
            let (version, deleted_secs) = deletion_version(data, event)?;
            (version, unix_seconds(deleted_secs))
        }
        None => (
            Version {
                key: updated_at(data, "membership")?,
                rank: Rank::Update,
            },
            None,
        ),
    };
    let mut changes = vec![Change::Membership(MembershipState {
        id: required_text(data, "id", "membership")?,
        organization_id,
        user_id: user_id.clone(),
        role: text(data, "role"),
        raw: data.clone(),
        version,
        deleted_at,
    })];
    // The embedded organization refreshes ours when newer; at an equal key the organization's
    // own event wins (rank), so the result does not depend on arrival order.
    if integer(organization, "updated_at").is_some() {
        changes.push(Change::Organization(organization_state(
            organization,
            Rank::Initial,
        )?));
    }
    // `public_user_data` has no `updated_at`: it only fills in a user we have never seen.
    changes.push(Change::UserSnapshot(UserState {
        id: user_id,
        primary_email: text(public_user, "identifier"),
        first_name: text(public_user, "first_name"),
        last_name: text(public_user, "last_name"),
        raw: public_user.clone(),
        version: Version {
            key: 0,
            rank: Rank::Initial,
        },
        deleted_at: None,
    }));
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, delivered: i64, data: Value) -> NewEvent {
        NewEvent {
            provider: billing_sync_store::ledger::Provider::Clerk,
            event_id: "msg_test".into(),
            event_type: event_type.into(),
            api_version: None,
            livemode: None,
            event_created: Some(delivered),
            payload: json!({"data": data, "object": "event", "type": event_type}),
            payload_text: None,
        }
    }

    #[test]
    fn the_primary_email_is_the_address_named_by_its_id() {
        let data = json!({"id": "user_1", "updated_at": 5, "primary_email_address_id": "idn_2",
            "email_addresses": [{"id": "idn_1", "email_address": "old@example.com"},
                                {"id": "idn_2", "email_address": "main@example.com"}]});
        let Plan::Apply(changes) = project(&event("user.updated", 1, data)) else {
            panic!()
        };
        let Change::User(user) = &changes[0] else {
            panic!()
        };
        assert_eq!(user.primary_email.as_deref(), Some("main@example.com"));
    }

    #[test]
    fn a_deletion_is_ordered_by_the_later_of_updated_at_and_delivery() {
        let stub = json!({"id": "org_1", "object": "organization", "deleted": true});
        let Plan::Apply(changes) = project(&event("organization.deleted", 2_000, stub)) else {
            panic!()
        };
        let Change::Organization(org) = &changes[0] else {
            panic!()
        };
        assert_eq!(
            org.version,
            Version {
                key: 2_000_000,
                rank: Rank::Terminal
            }
        );
        assert!(org.deleted_at.is_some());
    }

    #[test]
    fn sessions_and_emails_are_ignored() {
        assert_eq!(
            project(&event("session.created", 1, json!({}))),
            Plan::Ignore
        );
        assert_eq!(project(&event("email.created", 1, json!({}))), Plan::Ignore);
    }
}
