//! Clerk events (`{data, object: "event", type, …}`) → changes to the synced state.
//!
//! Ordering: a state's key is `data.updated_at` (ms). `organization.deleted` and `user.deleted`
//! carry no `updated_at`, and a deleted membership's is that of its last update, so a deletion
//! is keyed by the later of its `updated_at` and the delivery's `svix-timestamp` (a deletion is
//! sent no earlier than it happened). The top-level `timestamp` is not used: its unit differs
//! between Clerk's own examples.

use serde_json::Value;

use crate::Seen;
use crate::event::{NewEvent, Plan};
use crate::json::{integer, required_text, text, unix_seconds};
use crate::state::{
    Change, MembershipState, OrganizationState, Rank, RawJson, SyncedRow, UserState, Version,
};

/// What `event` changes: its `data`, delivered at `event.event_created` (the delivery's
/// `svix-timestamp`), seen as its type says ([`Seen`]).
pub fn project(event: &NewEvent) -> Plan {
    let seen = Seen::by_event_type(&event.event_type);
    let project_data = |object: fn(&Value, i64, Seen) -> Result<Vec<Change>, String>| {
        let data = event
            .payload
            .get("data")
            .filter(|data| data.is_object())
            .ok_or_else(|| "event has no object `data`".to_owned())?;
        let delivered = event
            .event_created
            .ok_or_else(|| "event has no delivery timestamp".to_owned())?;
        object(data, delivered, seen)
    };
    let result = match event.event_type.as_str() {
        "organization.created" | "organization.updated" | "organization.deleted" => {
            project_data(|data, at, seen| organization(data, at, seen).map(|c| vec![c]))
        }
        "user.created" | "user.updated" | "user.deleted" => {
            project_data(|data, at, seen| user(data, at, seen).map(|c| vec![c]))
        }
        "organizationMembership.created"
        | "organizationMembership.updated"
        | "organizationMembership.deleted" => project_data(membership),
        _ => return Plan::Ignore,
    };
    match result {
        Ok(changes) => Plan::Apply(changes),
        Err(reason) => Plan::Fail(reason),
    }
}

fn updated_at(data: &Value, what: &str) -> Result<i64, String> {
    integer(data, "updated_at").ok_or_else(|| format!("{what} has no integer `updated_at`"))
}

/// The key of a deletion delivered at `delivered_secs`: the later of the object's
/// `updated_at` and the delivery time.
fn deletion_version(data: &Value, delivered_secs: i64) -> Version {
    let key = integer(data, "updated_at")
        .unwrap_or(0)
        .max(delivered_secs.saturating_mul(1000));
    Version {
        key,
        rank: Rank::Terminal,
    }
}

/// An organization; `at` (unix seconds) matters only to a deletion, which it dates.
pub fn organization(data: &Value, at: i64, seen: Seen) -> Result<Change, String> {
    if seen != Seen::Deleted {
        return organization_state(data, Rank::Update).map(Change::Organization);
    }
    // A tombstone holds what the deletion carried (a stub), so its content does not depend
    // on which earlier events happened to arrive before it.
    Ok(Change::Organization(OrganizationState {
        row: SyncedRow {
            id: required_text(data, "id", "deleted organization")?,
            raw: RawJson::of(data),
            version: deletion_version(data, at),
            deleted_at: unix_seconds(at),
        },
        name: text(data, "name"),
        slug: text(data, "slug"),
    }))
}

fn organization_state(data: &Value, rank: Rank) -> Result<OrganizationState, String> {
    Ok(OrganizationState {
        row: SyncedRow {
            id: required_text(data, "id", "organization")?,
            raw: RawJson::of(data),
            version: Version {
                key: updated_at(data, "organization")?,
                rank,
            },
            deleted_at: None,
        },
        name: text(data, "name"),
        slug: text(data, "slug"),
    })
}

fn primary_email(data: &Value) -> Option<String> {
    let primary_id = text(data, "primary_email_address_id")?;
    data.get("email_addresses")?
        .as_array()?
        .iter()
        .find(|address| text(address, "id").as_deref() == Some(primary_id.as_str()))
        .and_then(|address| text(address, "email_address"))
}

/// A user; `at` (unix seconds) matters only to a deletion, which it dates.
pub fn user(data: &Value, at: i64, seen: Seen) -> Result<Change, String> {
    if seen == Seen::Deleted {
        return Ok(Change::User(UserState {
            row: SyncedRow {
                id: required_text(data, "id", "deleted user")?,
                raw: RawJson::of(data),
                version: deletion_version(data, at),
                deleted_at: unix_seconds(at),
            },
            primary_email: None,
            first_name: None,
            last_name: None,
        }));
    }
    Ok(Change::User(UserState {
        row: SyncedRow {
            id: required_text(data, "id", "user")?,
            raw: RawJson::of(data),
            version: Version {
                key: updated_at(data, "user")?,
                rank: Rank::Update,
            },
            deleted_at: None,
        },
        primary_email: primary_email(data),
        first_name: text(data, "first_name"),
        last_name: text(data, "last_name"),
    }))
}

/// A membership, plus the organization and user snapshots it embeds; `at` (unix seconds)
/// matters only to a deletion, which it dates.
pub fn membership(data: &Value, at: i64, seen: Seen) -> Result<Vec<Change>, String> {
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
    let (version, deleted_at) = match seen {
        Seen::Deleted => (deletion_version(data, at), unix_seconds(at)),
        Seen::Created | Seen::Updated => (
            Version {
                key: updated_at(data, "membership")?,
                rank: Rank::Update,
            },
            None,
        ),
    };
    let mut changes = vec![Change::Membership(MembershipState {
        row: SyncedRow {
            id: required_text(data, "id", "membership")?,
            raw: RawJson::of(data),
            version,
            deleted_at,
        },
        organization_id,
        user_id: user_id.clone(),
        role: text(data, "role"),
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
        row: SyncedRow {
            id: user_id,
            raw: RawJson::of(public_user),
            version: Version {
                key: 0,
                rank: Rank::Initial,
            },
            deleted_at: None,
        },
        primary_email: text(public_user, "identifier"),
        first_name: text(public_user, "first_name"),
        last_name: text(public_user, "last_name"),
    }));
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, delivered: i64, data: Value) -> NewEvent {
        NewEvent {
            provider: crate::Provider::Clerk,
            event_id: "msg_test".into(),
            event_type: event_type.into(),
            api_version: None,
            livemode: None,
            event_created: Some(delivered),
            payload: json!({"data": data, "object": "event", "type": event_type}),
            payload_text: "{}".into(),
            object_text: None,
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
            org.row.version,
            Version {
                key: 2_000_000,
                rank: Rank::Terminal
            }
        );
        assert!(org.row.deleted_at.is_some());
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
