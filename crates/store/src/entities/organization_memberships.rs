//! `organization_memberships`: which Clerk user belongs to which organization, with what role.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied state of one Clerk organization membership.
    table "organization_memberships";
    /// Clerk's `orgmem_…` id.
    id;
    /// Clerk's `updated_at` (ms) of that state; for a deletion, the deletion's ordering key.
    ordering_key;
    /// No enforced relations: Clerk may deliver a membership before its organization or user.
    relations;
    columns {
        /// `data.organization.id`.
        organization_id: String,
        /// `data.public_user_data.user_id`.
        user_id: String,
        /// The member's role, e.g. `org:admin`.
        role: Option<String>,
    }
}
