//! [`decide`]: a batch of one organization's requests, in arrival order, against its account.

use std::collections::BTreeSet;

use crate::{
    Account, Answer, Answered, Credits, Decisions, Grant, GrantSource, Kind, Request, Transaction,
    UnixSeconds, fingerprint,
};

/// Settles what is due on `account` at `now` (pending grants, refunds, expiries, in that
/// order), then decides each request in order. `account` is left as the store must write it;
/// the returned [`Decisions`] say what changed.
pub fn decide(account: &mut Account, now: UnixSeconds, requests: &[Request]) -> Decisions {
    let mut ledger = Ledger {
        account,
        now,
        transactions: Vec::new(),
        changed: BTreeSet::new(),
    };
    ledger.settle();
    let answers = requests
        .iter()
        .map(|request| ledger.answer(request))
        .collect();
    Decisions {
        answers,
        transactions: ledger.transactions,
        changed_grants: ledger.changed.into_iter().collect(),
    }
}

/// An account being decided on, and what has changed so far.
struct Ledger<'a> {
    account: &'a mut Account,
    now: UnixSeconds,
    transactions: Vec<Transaction>,
    changed: BTreeSet<usize>,
}

/// What a transaction records besides its amount.
#[derive(Default)]
struct Entry {
    idempotency_key: Option<String>,
    fingerprint: Option<String>,
    reference: Option<String>,
    reason: Option<String>,
}

impl Ledger<'_> {
    fn settle(&mut self) {
        // Pending grants in the order they were recorded.
        let mut pending: Vec<usize> = (0..self.account.grants.len())
            .filter(|&index| !self.account.grants[index].credited)
            .collect();
        pending.sort_by_key(|&index| order_recorded(&self.account.grants[index]));
        for index in pending {
            let grant = &mut self.account.grants[index];
            if grant.amount == 0 {
                // A price without credits: nothing to credit, nothing to explain.
                grant.credited = true;
                self.changed.insert(index);
            } else {
                self.credit(index, Kind::Grant, Entry::default());
            }
        }
        self.expire();
        self.take_back_refunds();
    }

    /// Credits grant `index`: it pays the debt first, the rest remains to spend. A grant that
    /// had expired when it is credited pays no debt: it was never spendable, and is written
    /// off whole by the expiry that follows.
    fn credit(&mut self, index: usize, kind: Kind, mut entry: Entry) -> Transaction {
        let now = self.now;
        let grant = &mut self.account.grants[index];
        let paying = if grant.is_expired(now) {
            0
        } else {
            grant.amount.min(self.account.debt)
        };
        self.account.debt -= paying;
        grant.remaining = grant.amount - paying;
        grant.credited = true;
        let amount = grant.amount;
        entry.reference = entry.reference.or_else(|| grant.reference.clone());
        self.changed.insert(index);
        self.append(kind, amount, entry)
    }

    /// Writes off the remaining of every credited grant that has expired.
    fn expire(&mut self) {
        for index in 0..self.account.grants.len() {
            let grant = &mut self.account.grants[index];
            if !grant.credited || grant.remaining == 0 || !grant.is_expired(self.now) {
                continue;
            }
            let lost = grant.remaining;
            grant.expired += lost;
            grant.remaining = 0;
            let reference = grant.reference.clone();
            self.changed.insert(index);
            self.append(
                Kind::Expire,
                -lost,
                Entry {
                    reference,
                    ..Entry::default()
                },
            );
        }
    }

    /// Takes back from each credited grant whose payment was refunded what the refund's
    /// cumulative amount says it has not taken yet.
    fn take_back_refunds(&mut self) {
        for index in 0..self.account.grants.len() {
            let grant = &self.account.grants[index];
            let Some(payment) = grant
                .payment
                .as_ref()
                .and_then(|payment| self.account.payments.get(payment))
            else {
                continue;
            };
            if !grant.credited || payment.paid <= 0 {
                continue;
            }
            let refunded = payment.refunded.clamp(0, payment.paid);
            let due = (i128::from(grant.amount) * i128::from(refunded) / i128::from(payment.paid))
                as Credits;
            let taking = due - grant.taken_back;
            if taking <= 0 {
                continue;
            }
            let grant = &mut self.account.grants[index];
            let from_remaining = taking.min(grant.remaining);
            let from_expired = (taking - from_remaining).min(grant.expired);
            let spent = taking - from_remaining - from_expired;
            grant.remaining -= from_remaining;
            grant.expired -= from_expired;
            grant.taken_back += taking;
            self.account.debt += spent;
            let reference = grant.reference.clone();
            self.changed.insert(index);
            let lost = from_remaining + spent;
            if lost > 0 {
                self.append(
                    Kind::Refund,
                    -lost,
                    Entry {
                        reference,
                        ..Entry::default()
                    },
                );
            }
        }
    }

    fn answer(&mut self, request: &Request) -> Answer {
        let Some(key) = request.key() else {
            return Answer::Settled {
                balance: self.account.balance,
            };
        };
        let fingerprint = fingerprint(request);
        if let Some(answered) = self.account.answered.get(key) {
            return if answered.fingerprint == fingerprint {
                Answer::Done {
                    transaction: answered.sequence,
                    balance: answered.balance_after,
                }
            } else {
                Answer::KeyReused
            };
        }
        let entry = |reason: &Option<String>| Entry {
            idempotency_key: Some(key.to_owned()),
            fingerprint: Some(fingerprint.clone()),
            reference: None,
            reason: reason.clone(),
        };
        let transaction = match request {
            Request::Consume { amount, reason, .. } => {
                if self.account.balance < *amount {
                    return Answer::Insufficient {
                        balance: self.account.balance,
                    };
                }
                self.draw(*amount);
                self.append(Kind::Consume, -amount, entry(reason))
            }
            Request::Grant {
                amount,
                expires_at,
                reason,
                ..
            } => {
                if expires_at.is_some_and(|at| at <= self.now) {
                    return Answer::AlreadyExpired;
                }
                self.account.grants.push(Grant {
                    id: None,
                    source: GrantSource::Api,
                    reference: None,
                    amount: *amount,
                    remaining: 0,
                    expired: 0,
                    taken_back: 0,
                    expires_at: *expires_at,
                    created_at: self.now,
                    payment: None,
                    credited: false,
                });
                let index = self.account.grants.len() - 1;
                self.credit(index, Kind::Adjustment, entry(reason))
            }
            Request::Settle => unreachable!("a request without a key was answered above"),
        };
        self.account.answered.insert(
            key.to_owned(),
            Answered {
                fingerprint,
                sequence: transaction.sequence,
                balance_after: transaction.balance_after,
            },
        );
        Answer::Done {
            transaction: transaction.sequence,
            balance: transaction.balance_after,
        }
    }

    /// Takes `amount` from the spendable grants, the one expiring first first (never-expiring
    /// last), then the oldest. The caller checked the balance covers it, and the balance never
    /// exceeds what the grants hold.
    fn draw(&mut self, mut amount: Credits) {
        let now = self.now;
        let mut spendable: Vec<usize> = (0..self.account.grants.len())
            .filter(|&index| {
                let grant = &self.account.grants[index];
                grant.credited && grant.remaining > 0 && !grant.is_expired(now)
            })
            .collect();
        spendable.sort_by_key(|&index| {
            let grant = &self.account.grants[index];
            (
                grant.expires_at.unwrap_or(UnixSeconds::MAX),
                order_recorded(grant),
            )
        });
        for index in spendable {
            if amount == 0 {
                break;
            }
            let grant = &mut self.account.grants[index];
            let taken = amount.min(grant.remaining);
            grant.remaining -= taken;
            amount -= taken;
            self.changed.insert(index);
        }
        debug_assert_eq!(amount, 0, "the balance covered the consumption");
    }

    /// Appends a transaction of `amount` and moves the balance by it.
    fn append(&mut self, kind: Kind, amount: Credits, entry: Entry) -> Transaction {
        // Amounts are at most MAX_AMOUNT each: a sum past i64 would take ~9 million of them.
        // Were it reached, stopping the decision (nothing is written) beats a wrapped balance.
        self.account.balance = self
            .account
            .balance
            .checked_add(amount)
            .expect("a balance within i64: amounts are bounded by MAX_AMOUNT");
        self.account.last_sequence += 1;
        let transaction = Transaction {
            sequence: self.account.last_sequence,
            kind,
            amount,
            balance_after: self.account.balance,
            idempotency_key: entry.idempotency_key,
            fingerprint: entry.fingerprint,
            reference: entry.reference,
            reason: entry.reason,
            created_at: self.now,
        };
        self.transactions.push(transaction.clone());
        transaction
    }
}

/// The order grants were recorded in: their time, then the store's id (new ones last).
fn order_recorded(grant: &Grant) -> (UnixSeconds, i64) {
    (grant.created_at, grant.id.unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
