//! The store's tests on SQLite and PostgreSQL, as one test binary (each binary links the whole
//! tree): the batch reduction against the SQL guard, the credit ledger against its rules (and on the accounts it remembers), the
//! literal writer, the reads, the schema and its migrations, SQLite's pool.

mod changeset;
mod credits;
mod kept_connection;
mod literals;
mod reads;
mod remembered;
mod schema;
mod sqlite_pool;
