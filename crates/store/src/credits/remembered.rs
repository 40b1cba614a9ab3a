//! Each organization's account as this process last wrote it, and the version of its row that
//! write made: the next decision for that organization may start from it instead of a read,
//! and so cost one round trip instead of two (on one client, the read was 0.2 ms of a 0.8 ms
//! consume, PostgreSQL's statement log, docs/proofs.md).
//!
//! Remembering is never trusted. A decision on a remembered account is written only if the
//! account's row is still that version (another replica's write, or this process's own from
//! a decision in between, changes it) and only if nothing the projection records for the
//! ledger has appeared since — a pending grant of the organization or of its customers, a
//! refunded payment of one of its grants — the write's own check in the same statement
//! (`write::POSTGRES_WRITE`). A decision that would write nothing, or that answers a key it
//! does not spend (an earlier answer, a refusal), is made on a read instead: only a write is
//! checked. So an account is remembered only in the shape a read would load it: its credited
//! grants with credits left, its open reservations, no earlier answers, nothing pending or
//! refunded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billing_sync_credits::Account;

/// How many organizations are remembered at most; past it, the oldest quarter is forgotten.
const CAPACITY: usize = 4_096;

/// An account with more grants or open reservations than this is not remembered: memory stays
/// bounded, and such an account is read each time as before.
const MOST_ITEMS: usize = 16;

/// How long a remembered account is used: a bound on what nothing else foresaw changing.
const FRESH_FOR: Duration = Duration::from_secs(10);

/// An organization's account as last written here, and its row's version.
#[derive(Clone, Debug)]
pub(crate) struct Recalled {
    pub(crate) account: Account,
    pub(crate) version: String,
}

#[derive(Debug)]
enum Entry {
    Written {
        recalled: Recalled,
        at: Instant,
    },
    /// A decision on the remembered account was not written (its row had changed): the
    /// organization is decided on reads for a while, as replicas sharing it need.
    Contended {
        until: Instant,
    },
}

/// The remembered accounts; shared by every clone of the store.
#[derive(Debug, Default)]
pub(crate) struct RememberedLedgers {
    entries: Mutex<HashMap<String, Entry>>,
    /// Organizations decided on a remembered account so far.
    recalled: AtomicU64,
}

impl RememberedLedgers {
    /// Counts `organizations` decided on their remembered accounts (here for the store's
    /// callers, and in the metrics).
    pub(crate) fn recalled(&self, organizations: usize) {
        self.recalled
            .fetch_add(organizations as u64, Ordering::Relaxed);
        metrics::counter!("billing_sync_credits_remembered_total").increment(organizations as u64);
    }

    /// How many organizations were decided on their remembered accounts so far.
    pub(crate) fn recalled_so_far(&self) -> u64 {
        self.recalled.load(Ordering::Relaxed)
    }

    /// The organization's remembered account, when one is fresh.
    pub(crate) fn recall(&self, organization: &str) -> Option<Recalled> {
        let entries = self.entries.lock().expect("remembered ledgers");
        match entries.get(organization)? {
            Entry::Written { recalled, at } if at.elapsed() < FRESH_FOR => Some(recalled.clone()),
            _ => None,
        }
    }

    /// Remembers `account` as written at row version `version`, when it has the shape a read
    /// would load; forgets the organization otherwise. Leaves a contended one alone.
    pub(crate) fn remember(&self, organization: &str, account: &Account, version: String) {
        // Shaped before the lock is taken: other decisions wait on it.
        let account = as_read(account);
        let mut entries = self.entries.lock().expect("remembered ledgers");
        if let Some(Entry::Contended { until }) = entries.get(organization)
            && Instant::now() < *until
        {
            return;
        }
        let Some(account) = account else {
            entries.remove(organization);
            return;
        };
        let entry = Entry::Written {
            recalled: Recalled { account, version },
            at: Instant::now(),
        };
        insert_within_capacity(&mut entries, organization, entry);
    }

    /// A decision on the organization's remembered account was not written.
    pub(crate) fn contended(&self, organization: &str) {
        let entry = Entry::Contended {
            until: Instant::now() + FRESH_FOR,
        };
        let mut entries = self.entries.lock().expect("remembered ledgers");
        insert_within_capacity(&mut entries, organization, entry);
    }

    /// Forgets the organizations (their decision failed; what is stored is unknown).
    pub(crate) fn forget<'a>(&self, organizations: impl IntoIterator<Item = &'a str>) {
        let mut entries = self.entries.lock().expect("remembered ledgers");
        for organization in organizations {
            entries.remove(organization);
        }
    }
}

/// `account` as a read would load it after its write, or `None` when a read would load more
/// than remembering can vouch for (something pending or refunded, a grant not yet given its
/// id) or it is too large to keep.
fn as_read(account: &Account) -> Option<Account> {
    let vouched = account.payments.is_empty()
        && account
            .grants
            .iter()
            .all(|grant| grant.credited && grant.id.is_some());
    if !vouched {
        return None;
    }
    let mut grants: Vec<_> = account
        .grants
        .iter()
        .filter(|grant| grant.remaining > 0)
        .cloned()
        .collect();
    // A read loads them by id.
    grants.sort_by_key(|grant| grant.id);
    let reservations: std::collections::BTreeMap<_, _> = account
        .reservations
        .iter()
        .filter(|(_, reservation)| reservation.settled.is_none())
        .map(|(number, reservation)| (*number, reservation.clone()))
        .collect();
    if grants.len() > MOST_ITEMS || reservations.len() > MOST_ITEMS {
        return None;
    }
    Some(Account {
        grants,
        reservations,
        payments: HashMap::new(),
        answered: HashMap::new(),
        ..account.clone()
    })
}

/// Sets the organization's entry, first forgetting the oldest quarter when a new organization
/// would pass [`CAPACITY`].
fn insert_within_capacity(entries: &mut HashMap<String, Entry>, organization: &str, entry: Entry) {
    if entries.len() >= CAPACITY && !entries.contains_key(organization) {
        forget_oldest(entries);
    }
    entries.insert(organization.to_owned(), entry);
}

/// Forgets the quarter of `entries` written longest ago (contended ones first).
fn forget_oldest(entries: &mut HashMap<String, Entry>) {
    let mut ages: Vec<(Option<Instant>, String)> = entries
        .iter()
        .map(|(organization, entry)| {
            let at = match entry {
                Entry::Written { at, .. } => Some(*at),
                Entry::Contended { .. } => None,
            };
            (at, organization.clone())
        })
        .collect();
    ages.sort_unstable();
    for (_, organization) in ages.into_iter().take(CAPACITY / 4) {
        entries.remove(&organization);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_sync_credits::{Grant, GrantSource, Payment, Reservation};

    fn grant(id: Option<i64>, remaining: i64, credited: bool) -> Grant {
        Grant {
            id,
            source: GrantSource::Api,
            reference: None,
            amount: 10,
            remaining,
            expired: 0,
            taken_back: 0,
            expires_at: None,
            created_at: 0,
            payment: None,
            credited,
        }
    }

    #[test]
    fn an_account_is_remembered_as_a_read_would_load_it() {
        let mut account = Account {
            balance: 10,
            last_sequence: 4,
            grants: vec![grant(Some(9), 10, true), grant(Some(3), 0, true)],
            ..Account::default()
        };
        account.reservations.insert(
            2,
            Reservation {
                number: 2,
                amount: 1,
                expires_at: 100,
                settled: None,
            },
        );
        let ledgers = RememberedLedgers::default();
        ledgers.remember("org_a", &account, "77".to_owned());
        let recalled = ledgers.recall("org_a").expect("remembered");
        assert_eq!(recalled.version, "77");
        assert_eq!(recalled.account.grants, vec![grant(Some(9), 10, true)]);
        assert_eq!(recalled.account.reservations.len(), 1);
        assert_eq!(recalled.account.balance, 10);
    }

    #[test]
    fn what_remembering_cannot_vouch_for_is_forgotten() {
        let ledgers = RememberedLedgers::default();
        let plain = Account {
            grants: vec![grant(Some(1), 5, true)],
            ..Account::default()
        };
        for (why, account) in [
            (
                "a pending grant",
                Account {
                    grants: vec![grant(Some(1), 0, false)],
                    ..Account::default()
                },
            ),
            (
                "a grant without its id",
                Account {
                    grants: vec![grant(None, 5, true)],
                    ..Account::default()
                },
            ),
            (
                "a refunded payment",
                Account {
                    payments: HashMap::from([(
                        "pi_1".to_owned(),
                        Payment {
                            paid: 10,
                            refunded: 5,
                        },
                    )]),
                    ..plain.clone()
                },
            ),
            (
                "too many grants",
                Account {
                    grants: (0..=MOST_ITEMS as i64)
                        .map(|id| grant(Some(id), 1, true))
                        .collect(),
                    ..Account::default()
                },
            ),
        ] {
            ledgers.remember("org_a", &plain, "1".to_owned());
            ledgers.remember("org_a", &account, "2".to_owned());
            assert!(ledgers.recall("org_a").is_none(), "{why}");
        }
    }

    #[test]
    fn a_contended_organization_is_not_remembered_for_a_while() {
        let ledgers = RememberedLedgers::default();
        ledgers.remember("org_a", &Account::default(), "1".to_owned());
        ledgers.contended("org_a");
        ledgers.remember("org_a", &Account::default(), "2".to_owned());
        assert!(ledgers.recall("org_a").is_none());
    }

    #[test]
    fn remembering_stays_within_its_capacity() {
        let ledgers = RememberedLedgers::default();
        for n in 0..CAPACITY * 2 {
            ledgers.remember(&format!("org_{n}"), &Account::default(), n.to_string());
        }
        let kept = ledgers.entries.lock().unwrap().len();
        assert!(kept <= CAPACITY, "{kept}");
        assert!(
            ledgers
                .recall(&format!("org_{}", CAPACITY * 2 - 1))
                .is_some()
        );
    }
}
