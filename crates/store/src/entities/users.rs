//! `users`: Clerk users.

use sea_orm::entity::prelude::*;

synced_entity! {
    /// The last applied state of one Clerk user.
    table "users";
    /// Clerk's `user_…` id.
    id;
    /// Clerk's `updated_at` (ms) of that state; for a deletion, the deletion's ordering key.
    ordering_key;
    /// No enforced relations.
    relations;
    columns {
        /// The address of `email_addresses` whose id is `primary_email_address_id`.
        primary_email: Option<String>,
        /// Given name.
        first_name: Option<String>,
        /// Family name.
        last_name: Option<String>,
    }
}
