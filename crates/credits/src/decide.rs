//! [`decide`]: a batch of one organization's requests, in arrival order, against its account.

use std::collections::BTreeSet;

use crate::{
    Account, Answer, Answered, Credits, Decisions, Grant, GrantSource, Kind, Request, Reservation,
    Settled, Settlement, Transaction, UnixSeconds, fingerprint,
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
        changed_reservations: BTreeSet::new(),
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
        changed_reservations: ledger.changed_reservations.into_iter().collect(),
    }
}

/// An account being decided on, and what has changed so far.
struct Ledger<'a> {
    account: &'a mut Account,
    now: UnixSeconds,
    transactions: Vec<Transaction>,
    changed: BTreeSet<usize>,
    changed_reservations: BTreeSet<i64>,
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
        self.release_expired_reservations();
        self.expire();
        self.take_back_refunds();
    }

    /// Releases every open reservation whose time to live has ended.
    fn release_expired_reservations(&mut self) {
        let ended: Vec<i64> = self
            .account
            .reservations
            .values()
            .filter(|r| r.settled.is_none() && r.expires_at <= self.now)
            .map(|r| r.number)
            .collect();
        for number in ended {
            self.settle_reservation(number, Settlement::Expired);
        }
    }

    /// Settles open reservation `number` as `how`: what is captured is spent from the grants
    /// (expired ones kept for holds first; what they no longer hold, after a refund took it
    /// back, becomes debt), the rest returns to the balance, and expired credits no longer
    /// needed for holds are written off.
    fn settle_reservation(&mut self, number: i64, how: Settlement) -> Settled {
        let held = self.account.reservations[&number].amount;
        let captured = how.captured();
        self.account.held -= held;
        let short = self.draw(captured, Drawing::Capture);
        self.account.debt += short;
        let kind = match how {
            Settlement::Captured(_) => Kind::Capture,
            Settlement::Released | Settlement::Expired => Kind::Release,
        };
        let transaction = self.append(
            kind,
            held - captured,
            Entry {
                reference: Some(reservation_reference(number)),
                reason: (how == Settlement::Expired).then(|| "its time to live ended".to_owned()),
                ..Entry::default()
            },
        );
        let settled = Settled {
            how,
            transaction: transaction.sequence,
            balance_after: transaction.balance_after,
        };
        if let Some(reservation) = self.account.reservations.get_mut(&number) {
            reservation.settled = Some(settled);
        }
        self.changed_reservations.insert(number);
        self.expire();
        settled
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

    /// Writes off the remaining of every credited grant that has expired, except what open
    /// reservations hold beyond the unexpired grants' remaining: held credits do not expire
    /// while held. The latest to have expired keep it.
    fn expire(&mut self) {
        let now = self.now;
        let credited = |grant: &&Grant| grant.credited && grant.remaining > 0;
        let unexpired: Credits = (self.account.grants.iter())
            .filter(credited)
            .filter(|grant| !grant.is_expired(now))
            .map(|grant| grant.remaining)
            .sum();
        let mut keep = (self.account.held - unexpired).max(0);
        let mut expired: Vec<usize> = (0..self.account.grants.len())
            .filter(|&index| {
                let grant = &self.account.grants[index];
                credited(&grant) && grant.is_expired(now)
            })
            .collect();
        expired.sort_by_key(|&index| {
            let grant = &self.account.grants[index];
            std::cmp::Reverse((grant.expires_at, order_recorded(grant)))
        });
        for index in expired {
            let grant = &mut self.account.grants[index];
            let kept = keep.min(grant.remaining);
            keep -= kept;
            if kept == grant.remaining {
                continue;
            }
            let lost = grant.remaining - kept;
            grant.expired += lost;
            grant.remaining = kept;
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
        match request {
            Request::Capture {
                reservation,
                amount,
            } => return self.settle_requested(*reservation, Settlement::Captured(*amount)),
            Request::Release { reservation } => {
                return self.settle_requested(*reservation, Settlement::Released);
            }
            _ => {}
        }
        let Some(key) = request.key() else {
            return Answer::Settled {
                balance: self.account.balance,
            };
        };
        let fingerprint = fingerprint(request);
        if let Some(answered) = self.account.answered.get(key) {
            return if answered.fingerprint != fingerprint {
                Answer::KeyReused
            } else if let Request::Reserve { seconds, .. } = request {
                let number = answered.sequence;
                Answer::Reserved {
                    reservation: number,
                    // Its hold's answer: the reservation is loaded with the key's answer.
                    expires_at: self
                        .account
                        .reservations
                        .get(&number)
                        .map_or(self.now + seconds, |r| r.expires_at),
                    balance: answered.balance_after,
                }
            } else {
                Answer::Done {
                    transaction: answered.sequence,
                    balance: answered.balance_after,
                }
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
                let short = self.draw(*amount, Drawing::Consume);
                debug_assert_eq!(short, 0, "the balance covered the consumption");
                self.append(Kind::Consume, -amount, entry(reason))
            }
            Request::Reserve {
                amount,
                seconds,
                reason,
                ..
            } => {
                if self.account.balance < *amount {
                    return Answer::Insufficient {
                        balance: self.account.balance,
                    };
                }
                let number = self.account.last_sequence + 1;
                let expires_at = self.now + seconds;
                self.account.held += amount;
                self.account.reservations.insert(
                    number,
                    Reservation {
                        number,
                        amount: *amount,
                        expires_at,
                        settled: None,
                    },
                );
                self.changed_reservations.insert(number);
                let hold = self.append(
                    Kind::Hold,
                    -amount,
                    Entry {
                        reference: Some(reservation_reference(number)),
                        ..entry(reason)
                    },
                );
                self.remember(key, fingerprint, &hold);
                return Answer::Reserved {
                    reservation: number,
                    expires_at,
                    balance: hold.balance_after,
                };
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
                let credited = self.credit(index, Kind::Adjustment, entry(reason));
                // Expired credits kept for holds that this grant now covers go.
                self.expire();
                credited
            }
            Request::Capture { .. } | Request::Release { .. } | Request::Settle => {
                unreachable!("a request without a key was answered above")
            }
        };
        self.remember(key, fingerprint, &transaction);
        Answer::Done {
            transaction: transaction.sequence,
            balance: transaction.balance_after,
        }
    }

    /// Remembers `key`'s answer, `transaction`, for the batch's later requests.
    fn remember(&mut self, key: &str, fingerprint: String, transaction: &Transaction) {
        self.account.answered.insert(
            key.to_owned(),
            Answered {
                fingerprint,
                sequence: transaction.sequence,
                balance_after: transaction.balance_after,
            },
        );
    }

    /// A capture's or a release's answer: settled now when open (a capture at most the hold),
    /// the first answer again when settled the same way before, refused otherwise.
    fn settle_requested(&mut self, number: i64, how: Settlement) -> Answer {
        let Some(reservation) = self.account.reservations.get(&number) else {
            return Answer::NoSuchReservation;
        };
        if let Some(settled) = reservation.settled {
            // A release of one that expired asked for what happened: its credits are back.
            let same = settled.how == how
                || (how == Settlement::Released && settled.how == Settlement::Expired);
            return if same {
                Answer::ReservationSettled {
                    reservation: number,
                    settled,
                }
            } else {
                Answer::ReservationAlreadySettled { settled }
            };
        }
        if how.captured() > reservation.amount || how.captured() < 0 {
            return Answer::CaptureExceedsHold {
                held: reservation.amount,
            };
        }
        let settled = self.settle_reservation(number, how);
        Answer::ReservationSettled {
            reservation: number,
            settled,
        }
    }

    /// Takes `amount` from the grants, the one expiring first first (never-expiring last),
    /// then the oldest: for a consumption, the unexpired ones (the caller checked the balance
    /// covers it, and the balance never exceeds their remaining); for a capture, the expired
    /// ones kept for holds too, first. What the grants did not have: 0 unless a refund took
    /// back held credits.
    fn draw(&mut self, mut amount: Credits, drawing: Drawing) -> Credits {
        let now = self.now;
        let mut spendable: Vec<usize> = (0..self.account.grants.len())
            .filter(|&index| {
                let grant = &self.account.grants[index];
                grant.credited
                    && grant.remaining > 0
                    && (drawing == Drawing::Capture || !grant.is_expired(now))
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
        amount
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

/// What [`Ledger::draw`] draws for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drawing {
    Consume,
    Capture,
}

/// The reference a reservation's transactions carry.
fn reservation_reference(number: i64) -> String {
    format!("reservation:{number}")
}

/// The order grants were recorded in: their time, then the store's id (new ones last).
fn order_recorded(grant: &Grant) -> (UnixSeconds, i64) {
    (grant.created_at, grant.id.unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
