//! Writing what a batch's decisions changed: each table's rows as one parameter, a JSON array
//! of arrays, so that the statements' text is the same whatever the batch and each connection
//! prepares them once (`json_list`). On PostgreSQL every table in one statement (data-modifying
//! `WITH`s): one round trip while the batch holds its accounts' locks, and no literals to parse
//! — a batch written as literals in one simple-protocol message (as before) spent 0.7 ms of its
//! 1.2 ms parsing and planning them (32 organizations, PostgreSQL's statement log,
//! docs/proofs.md). On SQLite (no `WITH` that writes) a statement a table that has rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use billing_sync_credits::{Account, Decisions, Grant, Reservation, Transaction, UnixSeconds};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement};
use serde_json::{Value, json};

/// What a table's rows carry: each field's name (a column, or the key a row is found by) and
/// its PostgreSQL type, in the order of the row's JSON array.
type Fields = &'static [(&'static str, &'static str)];

/// The grants already stored whose state changed (found by id). A grant credited for an
/// organization its row did not name yet gets it.
const CHANGED_GRANTS: Fields = &[
    ("id", "bigint"),
    ("organization_id", "text"),
    ("amount", "bigint"),
    ("remaining", "bigint"),
    ("expired", "bigint"),
    ("taken_back", "bigint"),
    ("credited", "boolean"),
];

/// The grants the decisions made (the API's).
const MADE_GRANTS: Fields = &[
    ("organization_id", "text"),
    ("source", "text"),
    ("amount", "bigint"),
    ("remaining", "bigint"),
    ("expired", "bigint"),
    ("taken_back", "bigint"),
    ("expires_at", "bigint"),
    ("created_at", "bigint"),
    ("credited", "boolean"),
];

const TRANSACTIONS: Fields = &[
    ("organization_id", "text"),
    ("sequence", "bigint"),
    ("kind", "text"),
    ("amount", "bigint"),
    ("balance_after", "bigint"),
    ("idempotency_key", "text"),
    ("fingerprint", "text"),
    ("reference", "text"),
    ("reason", "text"),
    ("created_at", "bigint"),
];

/// The reservations made or settled (an upsert on their key).
const RESERVATIONS: Fields = &[
    ("organization_id", "text"),
    ("number", "bigint"),
    ("amount", "bigint"),
    ("expires_at", "bigint"),
    ("settlement", "text"),
    ("captured", "bigint"),
    ("settled_sequence", "bigint"),
    ("settled_balance", "bigint"),
    ("created_at", "bigint"),
];

/// The accounts' new state (each row exists: the decision made it before locking it).
const ACCOUNTS: Fields = &[
    ("organization_id", "text"),
    ("balance", "bigint"),
    ("debt", "bigint"),
    ("last_sequence", "bigint"),
    ("held", "bigint"),
    ("updated_at", "bigint"),
];

/// Writes what `decided` changed of `ledgers`.
pub(super) async fn write(
    txn: &DatabaseTransaction,
    ledgers: &HashMap<&str, Account>,
    decided: BTreeMap<&str, Decisions>,
    now: UnixSeconds,
) -> Result<(), DbErr> {
    if decided.is_empty() {
        return Ok(());
    }
    let mut changed_grants = Vec::new();
    let mut made_grants = Vec::new();
    let mut transactions = Vec::new();
    let mut reservations = Vec::new();
    let mut accounts = Vec::new();
    for (organization, decisions) in &decided {
        let ledger = &ledgers[organization];
        let mut indices = decisions.changed_grants.clone();
        indices.sort_unstable();
        indices.dedup();
        for index in indices {
            let grant = &ledger.grants[index];
            match grant.id {
                Some(id) => changed_grants.push(changed_grant(organization, id, grant)),
                None => made_grants.push(made_grant(organization, grant)),
            }
        }
        transactions.extend(
            decisions
                .transactions
                .iter()
                .map(|made| transaction(organization, made)),
        );
        reservations.extend(
            decisions
                .changed_reservations
                .iter()
                .map(|number| reservation(organization, &ledger.reservations[number], now)),
        );
        accounts.push(account(organization, ledger, now));
    }
    let rows = [
        changed_grants,
        made_grants,
        transactions,
        reservations,
        accounts,
    ];
    let backend = txn.get_database_backend();
    match backend {
        DbBackend::Postgres => {
            let values = rows.map(|rows| Value::Array(rows).to_string().into());
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                POSTGRES_WRITE.as_str(),
                values,
            ))
            .await?;
        }
        _ => {
            for (sql, rows) in SQLITE_WRITES.iter().zip(rows) {
                if rows.is_empty() {
                    continue;
                }
                let values = [Value::Array(rows).to_string().into()];
                txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                    .await?;
            }
        }
    }
    Ok(())
}

fn changed_grant(organization: &str, id: i64, grant: &Grant) -> Value {
    json!([
        id,
        organization,
        grant.amount,
        grant.remaining,
        grant.expired,
        grant.taken_back,
        grant.credited,
    ])
}

fn made_grant(organization: &str, grant: &Grant) -> Value {
    json!([
        organization,
        grant.source.as_str(),
        grant.amount,
        grant.remaining,
        grant.expired,
        grant.taken_back,
        grant.expires_at,
        grant.created_at,
        grant.credited,
    ])
}

fn transaction(organization: &str, made: &Transaction) -> Value {
    json!([
        organization,
        made.sequence,
        made.kind.as_str(),
        made.amount,
        made.balance_after,
        made.idempotency_key,
        made.fingerprint,
        made.reference,
        made.reason,
        made.created_at,
    ])
}

fn reservation(organization: &str, reservation: &Reservation, now: UnixSeconds) -> Value {
    let settled = reservation.settled;
    json!([
        organization,
        reservation.number,
        reservation.amount,
        reservation.expires_at,
        settled.map(|s| s.how.as_str()),
        settled.map_or(0, |s| s.how.captured()),
        settled.map(|s| s.transaction),
        settled.map(|s| s.balance_after),
        now,
    ])
}

fn account(organization: &str, account: &Account, now: UnixSeconds) -> Value {
    json!([
        organization,
        account.balance,
        account.debt,
        account.last_sequence,
        account.held,
        now,
    ])
}

/// The statement of each table, in the order of `write`'s rows: the rows are `r`. An update
/// of rows found by their key (the rows' first field) says `{only_keys}`, where PostgreSQL
/// is told that key's values again: the planner takes the rows' JSON for 100 rows whatever it
/// holds and joined them by hashing every row of the table (auto_explain: a scan of all 1,000
/// accounts and all 1,000 grants for a batch of 32), where an index scan on the keys reads the
/// batch's own.
const STATEMENTS: [(Fields, &str); 5] = [
    (
        CHANGED_GRANTS,
        "UPDATE credit_grants SET organization_id = r.organization_id, amount = r.amount, \
         remaining = r.remaining, expired = r.expired, taken_back = r.taken_back, \
         credited = r.credited FROM {rows} AS r WHERE credit_grants.id = r.id {only_keys}",
    ),
    (
        MADE_GRANTS,
        "INSERT INTO credit_grants ({columns}) SELECT {columns} FROM {rows} AS r WHERE true",
    ),
    (
        TRANSACTIONS,
        "INSERT INTO credit_transactions ({columns}) SELECT {columns} FROM {rows} AS r WHERE true",
    ),
    (
        RESERVATIONS,
        "INSERT INTO credit_reservations ({columns}) SELECT {columns} FROM {rows} AS r \
         WHERE true ON CONFLICT (organization_id, number) DO UPDATE SET \
         settlement = excluded.settlement, captured = excluded.captured, \
         settled_sequence = excluded.settled_sequence, settled_balance = excluded.settled_balance",
    ),
    (
        ACCOUNTS,
        "UPDATE credit_accounts SET balance = r.balance, debt = r.debt, \
         last_sequence = r.last_sequence, held = r.held, updated_at = r.updated_at \
         FROM {rows} AS r WHERE credit_accounts.organization_id = r.organization_id {only_keys}",
    ),
];

/// `statement` with its table's columns, its `rows` and its `only_keys`.
fn render(fields: Fields, statement: &str, rows: &str, only_keys: &str) -> String {
    let columns: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    statement
        .replace("{columns}", &columns.join(", "))
        .replace("{rows}", rows)
        .replace("{only_keys}", only_keys)
}

/// PostgreSQL: one statement, each table's rows the parameter of its place.
static POSTGRES_WRITE: LazyLock<String> = LazyLock::new(|| {
    let mut parts: Vec<String> = STATEMENTS
        .iter()
        .enumerate()
        .map(|(index, (fields, statement))| {
            let values: Vec<String> = fields
                .iter()
                .enumerate()
                .map(|(at, (name, ty))| format!("CAST(e.item ->> {at} AS {ty}) AS {name}"))
                .collect();
            let items = format!(
                "jsonb_array_elements(CAST(${} AS jsonb)) AS e(item)",
                index + 1
            );
            let rows = format!("(SELECT {} FROM {items})", values.join(", "));
            let (key, ty) = fields[0];
            let table = statement
                .split_whitespace()
                .nth(1)
                .expect("a statement names its table second");
            let only_keys = format!(
                "AND {table}.{key} = ANY(ARRAY(SELECT CAST(e.item ->> 0 AS {ty}) FROM {items}))"
            );
            render(fields, statement, &rows, &only_keys)
        })
        .collect();
    let last = parts.pop().expect("five statements");
    let with: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(index, part)| format!("w{index} AS ({part})"))
        .collect();
    format!("WITH {} {last}", with.join(", "))
});

/// SQLite: a statement a table, its rows the one parameter.
static SQLITE_WRITES: LazyLock<Vec<String>> = LazyLock::new(|| {
    STATEMENTS
        .iter()
        .map(|(fields, statement)| {
            let values: Vec<String> = fields
                .iter()
                .enumerate()
                .map(|(at, (name, _))| format!("json_extract(value, '$[{at}]') AS {name}"))
                .collect();
            let rows = format!("(SELECT {} FROM json_each(?))", values.join(", "));
            render(fields, statement, &rows, "")
        })
        .collect()
});
