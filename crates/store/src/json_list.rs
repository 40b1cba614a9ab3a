//! Lists sent to the database as one parameter, a JSON array, rather than a parameter each.
//!
//! sqlx prepares every statement it runs and keeps 100 prepared a connection. A statement that
//! names each value of a list (`IN ($1, $2, …)`) has a new text for every length the list takes
//! — the credits writer's batches take any from 1 to 512 — and each new text costs a round trip
//! to prepare it before the one that runs it, and once the connection keeps 100, another to close
//! the oldest. With the list as one JSON parameter the text is the same whatever the length:
//! prepared once a connection, then one round trip a statement.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ColumnType, DbBackend};
use serde_json::Value;

/// `column` is one of `values`: on PostgreSQL `= ANY` of the array the JSON's elements make
/// (evaluated once, then an index scan with the array as its key, as `IN (…)` is), on SQLite
/// `IN` the JSON array's elements.
pub(crate) fn is_one_of<V: Into<Value>>(
    backend: DbBackend,
    column: impl ColumnTrait,
    values: impl IntoIterator<Item = V>,
) -> Expr {
    let numbers = matches!(
        column.def().get_column_type(),
        ColumnType::BigInteger | ColumnType::Integer
    );
    let sql = match (backend, numbers) {
        (DbBackend::Postgres, false) => {
            "$1 = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST($2 AS jsonb))))"
        }
        // The elements come out as text: a number column compares with numbers.
        (DbBackend::Postgres, true) => {
            "$1 = ANY(ARRAY(SELECT CAST(jsonb_array_elements_text(CAST($2 AS jsonb)) AS bigint)))"
        }
        _ => "? IN (SELECT value FROM json_each(?))",
    };
    Expr::cust_with_exprs(
        sql,
        [
            Expr::col(column.as_column_ref()),
            Expr::val(json_array(values)),
        ],
    )
}

/// `values` as the text of a JSON array.
pub(crate) fn json_array<V: Into<Value>>(values: impl IntoIterator<Item = V>) -> String {
    Value::Array(values.into_iter().map(Into::into).collect()).to_string()
}
