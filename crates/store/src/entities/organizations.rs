//! `organizations`: Clerk organizations.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied state of one Clerk organization.
    table "organizations";
    /// Clerk's `org_…` id.
    id;
    /// Clerk's `updated_at` (ms) of that state; for a deletion, the deletion's ordering key.
    ordering_key;
    /// No enforced relations: Clerk may deliver a membership before its organization.
    relations;
    columns {
        /// Display name.
        name: Option<String>,
        /// URL slug.
        slug: Option<String>,
    }
}
