//! The credit ledger's storage: load the accounts of a batch's organizations, let
//! `billing_sync_credits::decide` decide, write what it decided, each account only as the
//! version its decision read ([`Store::decide_credits`]). The rules live in that crate; this
//! module only loads and writes (STYLE 15).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use billing_sync_credits::{
    Account, Answer, Answered, Credits, Decisions, Grant, GrantSource, Payment, Request,
    Reservation, Settled, Settlement, UnixSeconds, decide,
};
use sea_orm::sea_query::{
    Expr, ExprTrait, Query, QueryStatementBuilder, SelectStatement, UnionType,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement, TransactionTrait,
};
use serde_json::Value;

mod remembered;
mod write;

use remembered::Recalled;
pub(crate) use remembered::RememberedLedgers;

use crate::Store;
use crate::entities::{
    credit_accounts as accounts, credit_grants as grants, credit_payments as payments,
    credit_reservations as reservations, credit_transactions as transactions,
    stripe_customers as customers, stripe_prices as prices, stripe_products as products,
};
use crate::error::StoreError;
use crate::json_list::{is_one_of, json_array};
use crate::kept_connection::KeptConnection;

/// One organization's requests in a batch, in arrival order.
#[derive(Clone, Debug)]
pub struct OrganizationRequests {
    /// Clerk's `org_…` id.
    pub organization_id: String,
    /// Its requests.
    pub requests: Vec<Request>,
}

/// An organization's ledger as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct CreditStatement {
    /// The balance: what may be spent (negative while a refund's debt is unpaid).
    pub balance: Credits,
    /// What open reservations hold, besides the balance.
    pub held: Credits,
    /// The open reservations, the one expiring first first (as many as transactions asked).
    pub reservations: Vec<reservations::Model>,
    /// The grants with credits left to spend, the one expiring first first.
    pub grants: Vec<grants::Model>,
    /// Transactions, newest first.
    pub transactions: Vec<transactions::Model>,
}

impl Store {
    /// Settles and decides `batch`, committed before this returns: the answers, per
    /// organization in `batch`'s order, are then durable and may be sent. Replicas deciding for
    /// the same organization never both write on what one read: an idempotency key is never
    /// debited twice.
    ///
    /// On PostgreSQL the batch is first decided on what one statement read, with no lock and no
    /// transaction, and written by one statement that is its own transaction: each account's
    /// row is written only if it is still the version that was read (its `xmin`), and with it
    /// everything its organization's decision changed; an organization whose account another
    /// replica changed in between writes nothing, and is decided again with its account locked
    /// (below). Two round trips a batch where the locked decision takes five (docs/proofs.md);
    /// one when every organization's account is the one this process remembers writing
    /// (`remembered`: the write then also checks that nothing became due since).
    ///
    /// The locked decision (SQLite's only one): in one transaction, each organization's account
    /// row locked (sorted; SQLite writes one transaction at a time) before anything of it is
    /// read, so replicas take turns and each sees what the other committed. Credits per unit of
    /// a price are its catalog metadata `credits_metadata_key`, else its product's.
    pub async fn decide_credits(
        &self,
        batch: &[OrganizationRequests],
        credits_metadata_key: &str,
        now: UnixSeconds,
    ) -> Result<Vec<Vec<Answer>>, StoreError> {
        let result: Result<_, DbErr> = async {
            let connection = self.connection();
            let threshold = self.low_balance_threshold();
            // Kept on PostgreSQL only, where decisions may be made on an unlocked read.
            let Some(kept) = self.kept_connection() else {
                return decide_locked(
                    connection,
                    None,
                    batch,
                    credits_metadata_key,
                    now,
                    threshold,
                )
                .await;
            };
            let remembered = self.remembered_ledgers();
            let decide =
                |recall| decide_unlocked(self, kept, recall, batch, credits_metadata_key, now);
            let mut answers = match decide(true).await {
                // A key a remembered account did not know had been answered before: the unique
                // index refused the write whole, and the batch is decided on reads, which find
                // the earlier answers.
                Err(err) if crate::error::database_code(&err).as_deref() == Some("23505") => {
                    metrics::counter!("billing_sync_credits_remembered_refused_total").increment(1);
                    remembered.forget(batch.iter().map(|o| o.organization_id.as_str()));
                    decide(false).await?
                }
                result => result?,
            };
            let lost: Vec<usize> = (0..answers.len())
                .filter(|&at| answers[at].is_none())
                .collect();
            if !lost.is_empty() {
                metrics::counter!("billing_sync_credits_decided_again_total")
                    .increment(lost.len() as u64);
                let again: Vec<OrganizationRequests> =
                    lost.iter().map(|&at| batch[at].clone()).collect();
                let decided = decide_locked(
                    connection,
                    Some(remembered),
                    &again,
                    credits_metadata_key,
                    now,
                    threshold,
                )
                .await?;
                for (at, decided) in lost.into_iter().zip(decided) {
                    answers[at] = Some(decided);
                }
            }
            answers
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| DbErr::Custom("a batch's organization went undecided".to_owned()))
        }
        .await;
        result.map_err(|err| self.classify(err))
    }

    /// The organization's balance when nothing is due — no pending grant to credit, no expiry
    /// or refund to write — read with no lock and no write, as a decision would leave it;
    /// `None` when something is due, which a decision (`Request::Settle`) must write first.
    /// Reads are the common case (every billing state), and need not queue behind the ledger's
    /// writer when there is nothing to write.
    pub async fn balance_if_nothing_due(
        &self,
        organization_id: &str,
        credits_metadata_key: &str,
        now: UnixSeconds,
    ) -> Result<Option<Credits>, StoreError> {
        // First one statement: the stored balance, and whether anything may be due at all.
        let row = self
            .connection()
            .query_one(&balance_and_anything_due(
                self.connection().get_database_backend(),
                organization_id,
                now,
            ))
            .await
            .map_err(|err| self.classify(err))?;
        let read = row
            .map(|row| {
                Ok::<_, DbErr>((
                    row.try_get::<Option<i64>>("", "balance")?,
                    row.try_get::<bool>("", "due")?,
                ))
            })
            .transpose()
            .map_err(|err| self.classify(err))?;
        if let Some((balance, false)) = read {
            return Ok(Some(balance.unwrap_or(0)));
        }
        // Something may be due: the rules say whether it is.
        let organizations = [organization_id];
        let mut ledgers = load(
            self.connection(),
            &organizations,
            &[],
            credits_metadata_key,
            now,
            Reading::Unlocked,
        )
        .await
        .map_err(|err| self.classify(err))?
        .ledgers;
        let mut account = ledgers.remove(organization_id).unwrap_or_default();
        let due = decide(&mut account, now, &[]);
        Ok(
            (due.transactions.is_empty() && due.changed_grants.is_empty())
                .then_some(account.balance),
        )
    }

    /// The organization's balance, what it holds and its open reservations, its grants with
    /// credits left, and up to `limit` of its transactions, newest first, older than sequence
    /// `before` when given. Reads what is written: settle first (`Request::Settle`) for a
    /// ledger that includes what is due.
    pub async fn credit_statement(
        &self,
        organization_id: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<CreditStatement, StoreError> {
        let result: Result<_, DbErr> = async {
            let db = self.connection();
            let account = accounts::Entity::find_by_id(organization_id.to_owned())
                .one(db)
                .await?;
            let (balance, held) = account.map_or((0, 0), |account| (account.balance, account.held));
            let reservations = reservations::Entity::find()
                .filter(reservations::Column::OrganizationId.eq(organization_id))
                .filter(reservations::Column::Settlement.is_null())
                .order_by_asc(reservations::Column::ExpiresAt)
                .order_by_asc(reservations::Column::Number)
                .limit(limit)
                .all(db)
                .await?;
            let grants = grants::Entity::find()
                .filter(grants::Column::OrganizationId.eq(organization_id))
                .filter(grants::Column::Credited.eq(true))
                .filter(grants::Column::Remaining.gt(0))
                .all(db)
                .await?;
            let mut grants = grants;
            grants.sort_by_key(|grant| {
                (
                    grant.expires_at.unwrap_or(UnixSeconds::MAX),
                    grant.created_at,
                    grant.id,
                )
            });
            let mut query = transactions::Entity::find()
                .filter(transactions::Column::OrganizationId.eq(organization_id));
            if let Some(before) = before {
                query = query.filter(transactions::Column::Sequence.lt(before));
            }
            let transactions = query
                .order_by_desc(transactions::Column::Sequence)
                .limit(limit)
                .all(db)
                .await?;
            Ok(CreditStatement {
                balance,
                held,
                reservations,
                grants,
                transactions,
            })
        }
        .await;
        result.map_err(|err| self.classify(err))
    }

    /// How many credits one unit of `price_id` grants: its catalog metadata
    /// `credits_metadata_key`, else its product's; `None` when neither says (or the price is not
    /// synced).
    pub async fn price_credits_per_unit(
        &self,
        price_id: &str,
        credits_metadata_key: &str,
    ) -> Result<Option<Credits>, StoreError> {
        credits_per_unit(
            self.connection(),
            HashSet::from([price_id]),
            credits_metadata_key,
        )
        .await
        .map(|per_unit| {
            per_unit
                .get(price_id)
                .copied()
                .filter(|credits| *credits > 0)
        })
        .map_err(|err| self.classify(err))
    }

    /// How many organizations' decisions this store (and its clones) started from the account
    /// it remembered writing rather than a read (`credits::remembered`): tests and benches
    /// check that the one-round-trip path is taken.
    pub fn credit_decisions_remembered(&self) -> u64 {
        self.remembered_ledgers().recalled_so_far()
    }

    /// Every transaction of the organization, oldest first (tests check the ledger with it).
    pub async fn credit_transactions(
        &self,
        organization_id: &str,
    ) -> Result<Vec<transactions::Model>, StoreError> {
        transactions::Entity::find()
            .filter(transactions::Column::OrganizationId.eq(organization_id))
            .order_by_asc(transactions::Column::Sequence)
            .all(self.connection())
            .await
            .map_err(|err| self.classify(err))
    }
}

/// A batch decided on a locked read, in one transaction (SQLite's only way; on PostgreSQL the
/// organizations whose accounts changed under an unlocked decision, whose accounts are then
/// remembered as written).
async fn decide_locked(
    db: &DatabaseConnection,
    remembered: Option<&RememberedLedgers>,
    batch: &[OrganizationRequests],
    credits_metadata_key: &str,
    now: UnixSeconds,
    low_balance_threshold: Option<i64>,
) -> Result<Vec<Vec<Answer>>, DbErr> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let txn = db.begin().await?;
    let decided = read_and_decide(
        &txn,
        batch,
        credits_metadata_key,
        now,
        low_balance_threshold,
        Reading::Locked,
        None,
    )
    .await?;
    // An account row made only to lock it (an organization with no ledger yet) whose requests
    // wrote nothing goes again: a refused consume leaves no trace.
    if !decided.untouched.is_empty() {
        let delete = Query::delete()
            .from_table(accounts::Entity)
            .and_where(is_one_of(
                txn.get_database_backend(),
                accounts::Column::OrganizationId,
                decided.untouched.iter().copied(),
            ))
            .and_where(accounts::Column::LastSequence.eq(0))
            .to_owned();
        txn.execute_raw(txn.get_database_backend().build(&delete))
            .await?;
    }
    let written = write_and_mark(&txn, &decided, now).await?;
    if written.len() != decided.decided.len() {
        // Defect: nothing else writes an account this transaction holds locked.
        return Err(DbErr::Custom(
            "a locked account changed before its decision was written".to_owned(),
        ));
    }
    txn.commit().await?;
    if let Some(remembered) = remembered {
        remember_written(remembered, &decided, &written);
    }
    Ok(decided.answers)
}

/// Remembers the accounts `written` as `decided` left them, at the versions the write made.
fn remember_written(
    remembered: &RememberedLedgers,
    decided: &Decided<'_>,
    written: &HashMap<String, Option<String>>,
) {
    for (organization, version) in written {
        if let (Some(version), Some(account)) =
            (version, decided.ledgers.get(organization.as_str()))
        {
            remembered.remember(organization, account, version.clone());
        }
    }
}

/// A batch decided on one unlocked read, its write its own transaction (PostgreSQL): the
/// answers of each organization whose decision was written or wrote nothing, `None` for those
/// whose account another replica changed after the read (their decision was not written).
/// With `recall`, an organization whose account is remembered may be decided on it instead of
/// the read (the store's remembered accounts); either way, the accounts written are
/// remembered. The read, and the write when it is alone, run on the connection the store keeps
/// (`kept`).
async fn decide_unlocked(
    store: &Store,
    kept: &KeptConnection,
    recall: bool,
    batch: &[OrganizationRequests],
    credits_metadata_key: &str,
    now: UnixSeconds,
) -> Result<Vec<Option<Vec<Answer>>>, DbErr> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let remembered = store.remembered_ledgers();
    let decided = read_and_decide(
        kept,
        batch,
        credits_metadata_key,
        now,
        store.low_balance_threshold(),
        Reading::Unlocked,
        recall.then_some(remembered),
    )
    .await?;
    // Alone, the write is its own transaction; the outbox hears of a crossed threshold in the
    // transaction that crossed it.
    let written = if decided.went_up.is_empty() && decided.went_down.is_empty() {
        write_and_mark(kept, &decided, now).await?
    } else {
        let txn = store.connection().begin().await?;
        let written = write_and_mark(&txn, &decided, now).await?;
        txn.commit().await?;
        written
    };
    remember_written(remembered, &decided, &written);
    for organization in decided.decided.keys() {
        if !written.contains_key(*organization) {
            if decided.remembered.contains(organization) {
                remembered.contended(organization);
            } else {
                remembered.forget([*organization]);
            }
        }
    }
    Ok(batch
        .iter()
        .zip(decided.answers)
        .map(|(organization, answers)| {
            let organization = organization.organization_id.as_str();
            let lost =
                decided.decided.contains_key(organization) && !written.contains_key(organization);
            (!lost).then_some(answers)
        })
        .collect())
}

/// What a batch's read and the rules decided, not yet written.
struct Decided<'b> {
    /// Each organization's account as the decisions left it.
    ledgers: HashMap<&'b str, Account>,
    /// The version of each organization's account row that was read (`None`: none was).
    versions: HashMap<&'b str, Option<String>>,
    /// The organizations decided on their remembered accounts rather than a read.
    remembered: HashSet<&'b str>,
    /// What each organization's decisions changed, those that changed anything.
    decided: BTreeMap<&'b str, Decisions>,
    /// The answers, per organization in the batch's order.
    answers: Vec<Vec<Answer>>,
    /// The organizations whose balance went back up to the low-balance threshold, and those
    /// that went below it.
    went_up: Vec<&'b str>,
    went_down: Vec<&'b str>,
    /// Organizations with no ledger before this batch, whose requests changed nothing.
    untouched: Vec<&'b str>,
}

/// Loads `batch`'s organizations as `reading` says and lets the rules decide each request, in
/// arrival order; writes nothing.
async fn read_and_decide<'b>(
    db: &impl ConnectionTrait,
    batch: &'b [OrganizationRequests],
    credits_metadata_key: &str,
    now: UnixSeconds,
    low_balance_threshold: Option<i64>,
    reading: Reading,
    remembered: Option<&RememberedLedgers>,
) -> Result<Decided<'b>, DbErr> {
    let mut organizations: Vec<&str> = batch.iter().map(|o| o.organization_id.as_str()).collect();
    organizations.sort_unstable();
    organizations.dedup();
    let recalled = remembered.map_or_else(HashMap::new, |remembered| {
        recall(remembered, batch, &organizations, now)
    });
    let unread: Vec<&str> = organizations
        .iter()
        .copied()
        .filter(|organization| !recalled.contains_key(organization))
        .collect();
    let Loaded {
        mut ledgers,
        mut versions,
    } = if unread.is_empty() {
        Loaded::default()
    } else {
        load(db, &unread, batch, credits_metadata_key, now, reading).await?
    };
    if let Some(ledgers) = remembered {
        ledgers.recalled(recalled.len());
    }
    let remembered: HashSet<&str> = recalled.keys().copied().collect();
    for (organization, Recalled { account, version }) in recalled {
        ledgers.insert(organization, account);
        versions.insert(organization, Some(version));
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut decided: BTreeMap<&str, Decisions> = BTreeMap::new();
    let balances_before: HashMap<&str, i64> = ledgers
        .iter()
        .map(|(organization, account)| (*organization, account.balance))
        .collect();
    for organization in batch {
        let account = ledgers
            .get_mut(organization.organization_id.as_str())
            .expect("every organization of the batch was loaded");
        let mut decisions = decide(account, now, &organization.requests);
        answers.push(std::mem::take(&mut decisions.answers));
        // An organization named twice in one batch: its decisions accumulate.
        let entry = decided
            .entry(organization.organization_id.as_str())
            .or_default();
        entry.transactions.extend(decisions.transactions);
        entry.changed_grants.extend(decisions.changed_grants);
        entry
            .changed_reservations
            .extend(decisions.changed_reservations);
    }
    // A read that found nothing due, or requests all refused or repeated: nothing to write.
    decided.retain(|_, decisions| !decisions.write_nothing());
    let untouched: Vec<&str> = organizations
        .iter()
        .copied()
        .filter(|organization| {
            !decided.contains_key(organization) && ledgers[organization].last_sequence == 0
        })
        .collect();
    // The organizations whose balance crossed the threshold, either way, and those that went
    // below it: the outbox hears of them in this transaction (a balance that merely moved is
    // not news).
    let crossed = |below: bool| -> Vec<&str> {
        let Some(threshold) = low_balance_threshold else {
            return Vec::new();
        };
        decided
            .keys()
            .copied()
            .filter(|organization| {
                let was_low = balances_before[organization] < threshold;
                let is_low = ledgers[organization].balance < threshold;
                was_low != is_low && is_low == below
            })
            .collect()
    };
    let (went_up, went_down) = (crossed(false), crossed(true));
    Ok(Decided {
        ledgers,
        versions,
        remembered,
        decided,
        answers,
        went_up,
        went_down,
        untouched,
    })
}

/// The organizations of `batch` that may be decided on their remembered accounts, with them:
/// each one remembered and fresh, every reservation its requests name open in it, and its
/// decisions on it writing something and spending every key its requests name — the write
/// checks that the account and what is due are as remembered, and the unique index that each
/// key is new; what writes nothing (a refusal, an earlier answer) is checked by nothing, and
/// is decided on a read. The decisions tried here are made again on the same account by the
/// caller (the rules are a pure function: the same ones).
fn recall<'b>(
    remembered: &RememberedLedgers,
    batch: &'b [OrganizationRequests],
    organizations: &[&'b str],
    now: UnixSeconds,
) -> HashMap<&'b str, Recalled> {
    let mut recalled = HashMap::new();
    let mut of: HashMap<&str, Vec<&OrganizationRequests>> = HashMap::new();
    for requests in batch {
        of.entry(requests.organization_id.as_str())
            .or_default()
            .push(requests);
    }
    for organization in organizations {
        let Some(remembered) = remembered.recall(organization) else {
            continue;
        };
        let requests = &of[organization];
        let every_request = || requests.iter().flat_map(|o| o.requests.iter());
        if every_request()
            .filter_map(Request::reservation)
            .any(|number| !remembered.account.reservations.contains_key(&number))
        {
            continue;
        }
        let mut tried = remembered.account.clone();
        let (mut writes, mut spent) = (false, HashSet::new());
        for organization in requests {
            let decisions = decide(&mut tried, now, &organization.requests);
            writes |= !decisions.write_nothing();
            spent.extend(
                decisions
                    .transactions
                    .into_iter()
                    .filter_map(|made| made.idempotency_key),
            );
        }
        if writes
            && every_request()
                .filter_map(Request::key)
                .all(|key| spent.contains(key))
        {
            recalled.insert(*organization, remembered);
        }
    }
    recalled
}

/// Writes `decided`, and marks the outbox for the organizations whose balance crossed the
/// low-balance threshold, those written (in one transaction with the write when there are any);
/// returns the organizations written, each with its account row's new version.
async fn write_and_mark<'b>(
    db: &impl ConnectionTrait,
    decided: &Decided<'b>,
    now: UnixSeconds,
) -> Result<HashMap<String, Option<String>>, DbErr> {
    let written = write::write(
        db,
        &decided.ledgers,
        &decided.decided,
        &decided.versions,
        &decided.remembered,
        now,
    )
    .await?;
    let was_written = |organizations: &[&'b str]| -> Vec<&'b str> {
        organizations
            .iter()
            .copied()
            .filter(|organization| written.contains_key(*organization))
            .collect()
    };
    let backend = db.get_database_backend();
    for mark in [
        crate::outbox::mark_statement(backend, &[], &was_written(&decided.went_up)),
        crate::outbox::balance_drop_statement(backend, &was_written(&decided.went_down)),
    ]
    .into_iter()
    .flatten()
    {
        db.execute_raw(mark).await?;
    }
    Ok(written)
}

/// How [`load`] reads the accounts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Each account row made if missing, and locked, in sorted order, before the rest is read.
    Locked,
    /// No write, no lock: to see whether anything is due, or for a decision whose write checks
    /// that each account is still the version read.
    Unlocked,
}

/// An account row as read, and its version: PostgreSQL's `xmin`, the transaction that wrote
/// it (every decision that changes an organization's ledger writes its account row).
#[derive(serde::Deserialize)]
struct VersionedAccount {
    #[serde(flatten)]
    account: accounts::Model,
    /// `None` on SQLite, where every decision is locked.
    version: Option<String>,
}

/// The organizations' accounts as loaded for the rules, and the version of each account row
/// read (`None`: it had none, or the backend keeps none).
#[derive(Default)]
struct Loaded<'b> {
    ledgers: HashMap<&'b str, Account>,
    versions: HashMap<&'b str, Option<String>>,
}

async fn load<'b>(
    db: &impl ConnectionTrait,
    organizations: &[&'b str],
    batch: &[OrganizationRequests],
    credits_metadata_key: &str,
    now: UnixSeconds,
    reading: Reading,
) -> Result<Loaded<'b>, DbErr> {
    let backend = db.get_database_backend();
    // Only the requests of the organizations loaded (a batch's others may be decided on their
    // remembered accounts) name keys and reservations to read.
    let loading: HashSet<&str> = organizations.iter().copied().collect();
    let requests = || {
        batch
            .iter()
            .filter(|organization| loading.contains(organization.organization_id.as_str()))
    };
    // The earlier answers to the keys the requests name are read with the grants.
    let keys: HashSet<(&str, &str)> = requests()
        .flat_map(|organization| {
            let id = organization.organization_id.as_str();
            organization
                .requests
                .iter()
                .filter_map(Request::key)
                .map(move |key| (id, key))
        })
        .collect();
    let keys: Vec<(&str, &str)> = keys.into_iter().collect();
    let locked = match reading {
        Reading::Locked => Some(lock_accounts(db, organizations, now).await?),
        Reading::Unlocked => None,
    };
    let Read {
        accounts: read_accounts,
        grants: rows,
        charges,
        answered,
    } = read_grants_and_answers(db, organizations, &keys, locked.is_none()).await?;
    let stored = locked.or(read_accounts).unwrap_or_default();
    let mut ledgers: HashMap<&str, Account> = HashMap::with_capacity(organizations.len());
    let mut versions = HashMap::with_capacity(organizations.len());
    for organization in organizations {
        let row = stored
            .iter()
            .find(|row| row.account.organization_id == *organization);
        let account = row.map(|row| &row.account);
        ledgers.insert(
            *organization,
            Account {
                balance: account.map_or(0, |a| a.balance),
                debt: account.map_or(0, |a| a.debt),
                last_sequence: account.map_or(0, |a| a.last_sequence),
                held: account.map_or(0, |a| a.held),
                ..Account::default()
            },
        );
        versions.insert(*organization, row.and_then(|row| row.version.clone()));
    }

    let customer_organizations = customer_organizations(db, &rows).await?;
    let unknown_amounts = rows
        .iter()
        .filter(|row| row.amount.is_none() && !row.credited)
        .filter_map(|row| row.price_id.as_deref())
        .collect();
    let credits_per_unit = credits_per_unit(db, unknown_amounts, credits_metadata_key).await?;
    let payments = payments_by_id(charges);
    for row in rows {
        let organization = row.organization_id.clone().or_else(|| {
            row.customer_id
                .as_ref()
                .and_then(|customer| customer_organizations.get(customer).cloned())
        });
        let Some(ledger) = organization
            .as_deref()
            .and_then(|organization| ledgers.get_mut(organization))
        else {
            continue;
        };
        let amount = match row.amount {
            Some(amount) => amount,
            None => match row
                .price_id
                .as_ref()
                .and_then(|price| credits_per_unit.get(price))
            {
                // The catalog does not know the price yet: the grant waits for it.
                None => continue,
                Some(per_unit) => {
                    let quantity = row.quantity.unwrap_or(0);
                    match billing_sync_credits::purchased_credits(*per_unit, quantity) {
                        Some(credits) => credits,
                        None => {
                            // Past what one grant may carry (a Payment Link's quantity that
                            // billing-sync's checkout would have refused): it waits, pending
                            // and said, rather than being credited a different number.
                            tracing::error!(
                                grant = row.id,
                                per_unit,
                                quantity,
                                "credits: a purchase grants more than one grant may carry; it \
                                 stays pending: grant it through the API in parts"
                            );
                            continue;
                        }
                    }
                }
            },
        };
        if let Some(payment) = row.payment_id.as_ref().and_then(|p| payments.get(p)) {
            ledger
                .payments
                .insert(row.payment_id.clone().unwrap_or_default(), *payment);
        }
        ledger.grants.push(Grant {
            id: Some(row.id),
            source: GrantSource::parse(&row.source).unwrap_or(GrantSource::Api),
            reference: row.reference,
            amount,
            remaining: row.remaining,
            expired: row.expired,
            taken_back: row.taken_back,
            expires_at: row.expires_at,
            created_at: row.created_at,
            payment: row.payment_id,
            credited: row.credited,
        });
    }

    for row in answered {
        let (Some(key), Some(ledger)) = (
            row.idempotency_key,
            ledgers.get_mut(row.organization_id.as_str()),
        ) else {
            continue;
        };
        ledger.answered.insert(
            key,
            Answered {
                fingerprint: row.fingerprint.unwrap_or_default(),
                sequence: row.sequence,
                balance_after: row.balance_after,
            },
        );
    }

    // The reservations: every open one (what is due to expire, what is held: only an account
    // that holds something has any, so a batch of consumptions reads none), those a capture or
    // release names, and those a repeated reserve's key made. Two selects, each on an index
    // (the open ones' partial index, the primary key), rather than one whose `OR` could walk
    // every reservation an organization ever made.
    let holding: Vec<&str> = ledgers
        .iter()
        .filter(|(_, ledger)| ledger.held != 0)
        .map(|(organization, _)| *organization)
        .collect();
    let named: HashSet<i64> = requests()
        .flat_map(|organization| {
            organization
                .requests
                .iter()
                .filter_map(Request::reservation)
        })
        .chain(
            ledgers
                .values()
                .flat_map(|ledger| ledger.answered.values().map(|answered| answered.sequence)),
        )
        .collect();
    let mut wanted: Vec<SelectStatement> = Vec::new();
    if !holding.is_empty() {
        wanted.push(
            reservations::Entity::find()
                .filter(is_one_of(
                    backend,
                    reservations::Column::OrganizationId,
                    holding,
                ))
                .filter(reservations::Column::Settlement.is_null())
                .into_query(),
        );
    }
    if !named.is_empty() {
        wanted.push(
            reservations::Entity::find()
                .filter(is_one_of(
                    backend,
                    reservations::Column::OrganizationId,
                    organizations.iter().copied(),
                ))
                .filter(is_one_of(backend, reservations::Column::Number, named))
                .into_query(),
        );
    }
    // Both in one round trip when both are wanted (a reservation in both comes twice: the
    // second is the same row).
    let rows = match wanted.pop() {
        None => Vec::new(),
        Some(mut statement) => {
            for other in wanted {
                statement.union(UnionType::All, other);
            }
            reservations::Entity::find()
                .from_raw_sql(db.get_database_backend().build(&statement))
                .all(db)
                .await?
        }
    };
    for row in rows {
        let Some(ledger) = ledgers.get_mut(row.organization_id.as_str()) else {
            continue;
        };
        let settled = match (&row.settlement, row.settled_sequence, row.settled_balance) {
            (Some(how), Some(transaction), Some(balance_after)) => Some(Settled {
                how: Settlement::parse(how, row.captured).ok_or_else(|| {
                    DbErr::Custom(format!("reservation settled as unknown `{how}`"))
                })?,
                transaction,
                balance_after,
            }),
            _ => None,
        };
        ledger.reservations.insert(
            row.number,
            Reservation {
                number: row.number,
                amount: row.amount,
                expires_at: row.expires_at,
                settled,
            },
        );
    }
    Ok(Loaded { ledgers, versions })
}

/// `SELECT` the ledger's transactions recorded under each (organization, idempotency key) of
/// `keys`: one probe of the unique index per pair. Written as `organization_id IN (…) AND
/// idempotency_key IN (…)`, PostgreSQL 15 planned it, while the statistics lagged behind an
/// organization's growth, as a scan of that organization's whole history filtered by key:
/// 8.7 ms and 18,643 rows read and dropped for 46 keys, and slower with every consume; a plain
/// join with the pairs was planned, on a table whose statistics still said empty, as a hash
/// join over a scan of every organization's transactions (auto_explain, docs/proofs.md). On
/// PostgreSQL each pair is therefore a lateral subquery run once per pair (its `LIMIT 1`, true
/// of a unique key, keeps the planner from flattening it back into a join), where the index on
/// both columns is the only cheap plan whatever the statistics say. SQLite has no hash join;
/// its `CROSS JOIN` keeps the pairs the outer loop, probing the index once for each. The pairs
/// are one parameter, a JSON array of `[organization, key]` (`json_list`).
pub fn answers_to(backend: DbBackend, keys: &[(&str, &str)]) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => ANSWERS_TO_ON_POSTGRES,
        _ => {
            "SELECT t.* FROM json_each(?) AS k CROSS JOIN credit_transactions AS t \
             WHERE t.organization_id = json_extract(k.value, '$[0]') \
             AND t.idempotency_key = json_extract(k.value, '$[1]')"
        }
    };
    Statement::from_sql_and_values(backend, sql, [pairs(keys).into()])
}

/// `keys` as the JSON array of `[organization, key]` that [`answers_to`] takes.
fn pairs(keys: &[(&str, &str)]) -> String {
    json_array(
        keys.iter()
            .map(|(organization, key)| serde_json::json!([organization, key])),
    )
}

/// [`answers_to`] on PostgreSQL: the pairs are `$1`.
const ANSWERS_TO_ON_POSTGRES: &str = "SELECT t.* FROM jsonb_array_elements(CAST($1 AS jsonb)) \
     AS k(pair) CROSS JOIN LATERAL (SELECT * FROM credit_transactions AS p \
     WHERE p.organization_id = k.pair ->> 0 AND p.idempotency_key = k.pair ->> 1 LIMIT 1) AS t";

/// What a decision reads besides the locked accounts.
struct Read {
    /// The accounts, when they were asked for (an unlocked read).
    accounts: Option<Vec<VersionedAccount>>,
    /// The grants it may touch ([`grants_to_decide`]).
    grants: Vec<grants::Model>,
    /// The charges of their payments.
    charges: Vec<payments::Model>,
    /// The earlier answers to the batch's keys ([`answers_to`]).
    answered: Vec<transactions::Model>,
}

/// Reads the grants `organizations`' decisions may touch, their payments' charges, the earlier
/// answers to `keys`, and with `accounts` their account rows. On PostgreSQL in one statement,
/// each a JSON array, so that an unlocked decision reads one snapshot in one round trip (a
/// round trip cost the writer 200–350 µs on this 2-core machine, two to three times the
/// statements' own time: its own timing of each step, docs/proofs.md). SQLite's statements
/// are calls within the process: one each.
async fn read_grants_and_answers(
    db: &impl ConnectionTrait,
    organizations: &[&str],
    keys: &[(&str, &str)],
    accounts: bool,
) -> Result<Read, DbErr> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres {
        let organizations = json_array(organizations.iter().copied());
        let sql = if accounts {
            READ_WITH_ACCOUNTS_ON_POSTGRES.as_str()
        } else {
            READ_IN_ONE_ON_POSTGRES.as_str()
        };
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [organizations.into(), pairs(keys).into()],
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("the ledger's read returned no row".to_owned()))?;
        fn rows<T: serde::de::DeserializeOwned>(
            row: &sea_orm::QueryResult,
            column: &str,
        ) -> Result<Vec<T>, DbErr> {
            let text: String = row.try_get("", column)?;
            serde_json::from_str(&text)
                .map_err(|err| DbErr::Custom(format!("the ledger's read of {column}: {err}")))
        }
        return Ok(Read {
            accounts: accounts.then(|| rows(&row, "accounts")).transpose()?,
            grants: rows(&row, "grants")?,
            charges: rows(&row, "charges")?,
            answered: rows(&row, "answered")?,
        });
    }
    let accounts = if accounts {
        let rows = accounts::Entity::find()
            .filter(is_one_of(
                backend,
                accounts::Column::OrganizationId,
                organizations.iter().copied(),
            ))
            .all(db)
            .await?;
        Some(
            rows.into_iter()
                .map(|account| VersionedAccount {
                    account,
                    version: None,
                })
                .collect(),
        )
    } else {
        None
    };
    let grants = grants::Entity::find()
        .from_raw_sql(grants_to_decide(backend, organizations))
        .all(db)
        .await?;
    let charges = charges_of(db, &grants).await?;
    let answered = if keys.is_empty() {
        Vec::new()
    } else {
        transactions::Entity::find()
            .from_raw_sql(answers_to(backend, keys))
            .all(db)
            .await?
    };
    Ok(Read {
        accounts,
        grants,
        charges,
        answered,
    })
}

/// [`read_grants_and_answers`]' statement: the organizations are `$1`, the pairs `$2`.
static READ_IN_ONE_ON_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH g AS ({GRANTS_TO_DECIDE_ON_POSTGRES}), a AS ({answers}) SELECT \
         (SELECT CAST(coalesce(json_agg(g ORDER BY g.id), '[]') AS text) FROM g) AS grants, \
         (SELECT CAST(coalesce(json_agg(p), '[]') AS text) FROM credit_payments AS p \
         WHERE p.payment_id IN (SELECT g.payment_id FROM g)) AS charges, \
         (SELECT CAST(coalesce(json_agg(a), '[]') AS text) FROM a) AS answered",
        answers = ANSWERS_TO_ON_POSTGRES.replace("$1", "$2"),
    )
});

/// [`READ_IN_ONE_ON_POSTGRES`] and the accounts, each with its version (`xmin`): one probe of
/// the primary key per organization (without the `LIMIT 1` of a unique key the planner made the
/// probes a hash join over a scan of every account: 0.21 ms of a 0.38 ms read at 1,000
/// accounts, auto_explain).
static READ_WITH_ACCOUNTS_ON_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}, (SELECT CAST(coalesce(json_agg(c), '[]') AS text) FROM \
         jsonb_array_elements_text(CAST($1 AS jsonb)) AS o(id) CROSS JOIN LATERAL \
         (SELECT c.*, CAST(c.xmin AS text) AS version FROM credit_accounts AS c \
         WHERE c.organization_id = o.id LIMIT 1) AS c) AS accounts",
        READ_IN_ONE_ON_POSTGRES.as_str()
    )
});

/// `SELECT` the grants a decision for `organizations` may touch, by id: theirs that are
/// pending, have credits left, or were paid by a refunded payment; and the pending grants of
/// their customers that name no organization. Each organization's are read through the index on
/// `(organization_id, credited)`: on PostgreSQL as a lateral subquery per organization, since
/// `organization_id = ANY(…)` over a table of a few thousand grants was planned as a scan of
/// every organization's grants, comparing each with every organization of the batch (0.6 ms of a
/// 32-organization batch's 4.4 at 1,000 grants, auto_explain, docs/proofs.md), and would grow
/// with every organization signed up. The subquery ends in `OFFSET 0` so that the planner
/// cannot flatten it back into a join: once every table was analyzed, it hashed a scan of a
/// small table's every grant (1,000 of them: 0.16 ms of a one-organization read), since it
/// takes a JSON list for 100 organizations and a probe each for dearer. Customers' grants come
/// from the customers (their index on the organization), then the grants' index on the customer.
pub fn grants_to_decide(backend: DbBackend, organizations: &[&str]) -> Statement {
    let organizations = json_array(organizations.iter().copied());
    let (sql, values) = match backend {
        DbBackend::Postgres => (GRANTS_TO_DECIDE_ON_POSTGRES, vec![organizations.into()]),
        // SQLite's `?` are taken in order: the list twice.
        _ => (
            "SELECT g.* FROM credit_grants AS g \
             WHERE g.organization_id IN (SELECT value FROM json_each(?)) \
             AND (g.credited = false OR g.remaining > 0 \
             OR EXISTS (SELECT 1 FROM credit_payments AS p WHERE p.payment_id = g.payment_id)) \
             UNION ALL SELECT g.* FROM stripe_customers AS c \
             JOIN credit_grants AS g ON g.customer_id = c.id \
             WHERE c.organization_id IN (SELECT value FROM json_each(?)) \
             AND g.organization_id IS NULL AND g.credited = false \
             ORDER BY id",
            vec![organizations.clone().into(), organizations.into()],
        ),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// [`grants_to_decide`] on PostgreSQL: the organizations are `$1`.
const GRANTS_TO_DECIDE_ON_POSTGRES: &str = "SELECT g.* FROM jsonb_array_elements_text(CAST($1 AS jsonb)) AS o(id) \
             CROSS JOIN LATERAL (SELECT * FROM credit_grants AS g \
             WHERE g.organization_id = o.id AND (g.credited = false OR g.remaining > 0 \
             OR EXISTS (SELECT 1 FROM credit_payments AS p WHERE p.payment_id = g.payment_id)) \
             OFFSET 0) AS g \
             UNION ALL SELECT g.* FROM stripe_customers AS c \
             JOIN credit_grants AS g ON g.customer_id = c.id \
             WHERE c.organization_id = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST($1 AS jsonb)))) \
             AND g.organization_id IS NULL AND g.credited = false \
             ORDER BY id";

/// `SELECT` the payments a refunded charge names: a grant they paid for may owe a take-back.
fn refunded_payments() -> SelectStatement {
    Query::select()
        .column(payments::Column::PaymentId)
        .from(payments::Entity)
        .to_owned()
}

/// `SELECT` the customers of `organizations`: their pending grants that name no organization
/// are the organizations' own.
fn customers_of(backend: DbBackend, organizations: &[&str]) -> SelectStatement {
    Query::select()
        .column(customers::Column::Id)
        .from(customers::Entity)
        .and_where(is_one_of(
            backend,
            customers::Column::OrganizationId,
            organizations.iter().copied(),
        ))
        .to_owned()
}

/// `SELECT` the organization's stored balance (`NULL` without an account) and whether anything
/// may be due (`due`): a pending grant of its own or of its customers, an expired grant with
/// credits left (kept for a hold, the rules say), a grant whose payment was refunded (then the
/// rules decide whether the refund was taken back already), or an open reservation whose time
/// to live ended.
fn balance_and_anything_due(
    backend: DbBackend,
    organization_id: &str,
    now: UnixSeconds,
) -> SelectStatement {
    use grants::Column as G;
    let own_due = Query::select()
        .expr(Expr::val(1))
        .from(grants::Entity)
        .and_where(G::OrganizationId.eq(organization_id))
        .and_where(
            G::Credited
                .eq(false)
                .or(G::Remaining.gt(0).and(G::ExpiresAt.lte(now)))
                .or(G::PaymentId.in_subquery(refunded_payments())),
        )
        .to_owned();
    let reservation_ended = Query::select()
        .expr(Expr::val(1))
        .from(reservations::Entity)
        .and_where(reservations::Column::OrganizationId.eq(organization_id))
        .and_where(reservations::Column::Settlement.is_null())
        .and_where(reservations::Column::ExpiresAt.lte(now))
        .to_owned();
    let customers_due = Query::select()
        .expr(Expr::val(1))
        .from(grants::Entity)
        .and_where(G::OrganizationId.is_null())
        .and_where(G::Credited.eq(false))
        .and_where(G::CustomerId.in_subquery(customers_of(backend, &[organization_id])))
        .to_owned();
    let balance = Query::select()
        .column(accounts::Column::Balance)
        .from(accounts::Entity)
        .and_where(accounts::Column::OrganizationId.eq(organization_id))
        .to_owned();
    Query::select()
        .expr_as(
            Expr::SubQuery(None, Box::new(balance.into_sub_query_statement())),
            "balance",
        )
        .expr_as(
            Expr::exists(own_due)
                .or(Expr::exists(customers_due))
                .or(Expr::exists(reservation_ended)),
            "due",
        )
        .to_owned()
}

/// Locks each of `organizations`' account rows, in their order (sorted), making those missing,
/// and returns them as they are once locked, with their version (`xmin`: this transaction's,
/// which the write checks as any other). One statement: an insert whose conflict with an
/// existing row locks it and changes nothing of it (`ON CONFLICT DO UPDATE` waits for another
/// replica's lock on the row and returns it as that replica committed it). An insert of the
/// missing rows, then a select `FOR UPDATE`, did the same in two round trips.
async fn lock_accounts(
    db: &impl ConnectionTrait,
    organizations: &[&str],
    now: UnixSeconds,
) -> Result<Vec<VersionedAccount>, DbErr> {
    let backend = db.get_database_backend();
    // The list as one JSON parameter (`json_list`), inserted in its order.
    let sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO credit_accounts (organization_id, updated_at) \
             SELECT a.organization_id, $1 \
             FROM jsonb_array_elements_text(CAST($2 AS jsonb)) WITH ORDINALITY \
             AS a(organization_id, n) ORDER BY a.n \
             ON CONFLICT (organization_id) DO UPDATE \
             SET last_sequence = credit_accounts.last_sequence \
             RETURNING *, CAST(xmin AS text) AS version"
        }
        // `WHERE true`: SQLite would read `ON CONFLICT` after a bare `FROM` as a join's `ON`.
        _ => {
            "INSERT INTO credit_accounts (organization_id, updated_at) \
             SELECT value, ? FROM json_each(?) WHERE true ORDER BY key \
             ON CONFLICT (organization_id) DO UPDATE \
             SET last_sequence = credit_accounts.last_sequence RETURNING *"
        }
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [now.into(), json_array(organizations.iter().copied()).into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(VersionedAccount {
                account: accounts::Model::from_query_result(row, "")?,
                version: match backend {
                    DbBackend::Postgres => Some(row.try_get("", "version")?),
                    _ => None,
                },
            })
        })
        .collect()
}

/// The organization of each customer that loaded grants name without one of their own.
async fn customer_organizations(
    txn: &impl ConnectionTrait,
    rows: &[grants::Model],
) -> Result<HashMap<String, String>, DbErr> {
    let unknown: HashSet<&str> = rows
        .iter()
        .filter(|row| row.organization_id.is_none())
        .filter_map(|row| row.customer_id.as_deref())
        .collect();
    if unknown.is_empty() {
        return Ok(HashMap::new());
    }
    let pairs: Vec<(String, Option<String>)> = customers::Entity::find()
        .select_only()
        .column(customers::Column::Id)
        .column(customers::Column::OrganizationId)
        .filter(is_one_of(
            txn.get_database_backend(),
            customers::Column::Id,
            unknown,
        ))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(pairs
        .into_iter()
        .filter_map(|(customer, organization)| Some((customer, organization?)))
        .collect())
}

/// Credits per unit of each price that pending grants of unknown amount name, from the
/// catalog: the price's metadata, else its product's; 0 for a price with neither (it grants
/// nothing). A price the catalog does not hold yet is absent.
async fn credits_per_unit(
    db: &impl ConnectionTrait,
    wanted: HashSet<&str>,
    key: &str,
) -> Result<HashMap<String, Credits>, DbErr> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let prices: Vec<(String, String, Option<String>)> = prices::Entity::find()
        .select_only()
        .column(prices::Column::Id)
        .column(prices::Column::ProductId)
        .column(prices::Column::Raw)
        .filter(is_one_of(
            db.get_database_backend(),
            prices::Column::Id,
            wanted,
        ))
        .into_tuple()
        .all(db)
        .await?;
    let product_ids: HashSet<&str> = prices
        .iter()
        .map(|(_, product, _)| product.as_str())
        .collect();
    let products: HashMap<String, Option<String>> = products::Entity::find()
        .select_only()
        .column(products::Column::Id)
        .column(products::Column::Raw)
        .filter(is_one_of(
            db.get_database_backend(),
            products::Column::Id,
            product_ids,
        ))
        .into_tuple::<(String, Option<String>)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut per_unit = HashMap::new();
    for (price, product, raw) in prices {
        let of_price = raw.as_deref().and_then(|raw| credits_in_metadata(raw, key));
        let credits = match of_price {
            Some(credits) => credits,
            None => match products.get(&product) {
                Some(raw) => raw
                    .as_deref()
                    .and_then(|raw| credits_in_metadata(raw, key))
                    .unwrap_or(0),
                // The product is not synced yet: it may carry the credits.
                None => continue,
            },
        };
        per_unit.insert(price, credits);
    }
    Ok(per_unit)
}

/// `metadata[key]` of a Stripe object's JSON text, when it is a whole number of credits ≥ 0.
pub fn credits_in_metadata(raw: &str, key: &str) -> Option<Credits> {
    let object: Value = serde_json::from_str(raw).ok()?;
    object
        .get("metadata")?
        .get(key)?
        .as_str()?
        .trim()
        .parse::<Credits>()
        .ok()
        .filter(|credits| billing_sync_credits::is_grantable(*credits))
}

/// The charges of the loaded grants' payments (refunded in part or whole).
async fn charges_of(
    db: &impl ConnectionTrait,
    rows: &[grants::Model],
) -> Result<Vec<payments::Model>, DbErr> {
    let wanted: HashSet<&str> = rows
        .iter()
        .filter_map(|r| r.payment_id.as_deref())
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    payments::Entity::find()
        .filter(is_one_of(
            db.get_database_backend(),
            payments::Column::PaymentId,
            wanted,
        ))
        .all(db)
        .await
}

/// What `charges` amount to, per payment.
fn payments_by_id(charges: Vec<payments::Model>) -> HashMap<String, Payment> {
    let mut by_payment: HashMap<String, Payment> = HashMap::new();
    for charge in charges {
        let payment = by_payment.entry(charge.payment_id).or_default();
        payment.paid = payment.paid.saturating_add(charge.paid);
        payment.refunded = payment.refunded.saturating_add(charge.refunded);
    }
    by_payment
}
