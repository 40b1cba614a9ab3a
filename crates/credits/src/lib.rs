//! The credit ledger's rules, with no I/O (STYLE 15): given one organization's account as the
//! store loaded it (locked) and a batch of requests in arrival order, [`decide`] says what each
//! request is answered and which transactions and grant changes the store must write, all in
//! one database transaction, before any answer is sent.
//!
//! The rules, stated here and explained for users in docs/credits.md:
//! - Credits move only by a [`Transaction`]: a signed integer amount and the balance after it.
//!   The balance is the sum of the transactions' amounts, and also the remaining of the
//!   unexpired grants less the account's debt ([`Account::is_consistent`]).
//! - A grant from Stripe arrives *pending* (the webhook only records what was bought); the next
//!   decision for its organization credits it. A grant pays the account's debt first, unless
//!   it had expired when it was credited: credits that were never spendable pay for nothing
//!   (they are credited and written off at once). A purchase grants [`purchased_credits`].
//! - A grant through the API whose `expires_at` has passed is refused.
//! - A consumption draws from the grant that expires first (grants that never expire last),
//!   then the oldest; it is refused, changing nothing, when the balance is short.
//! - An expired grant's remaining is written off by an `expire` transaction.
//! - A refund of a payment takes back `floor(granted × refunded / paid)` of each grant that
//!   payment made, cumulatively (a redelivered or older refund takes nothing more): from the
//!   grant's remaining first, then from what of it expired (no loss to the balance), and the
//!   rest, credits already spent, becomes debt: the balance may go negative.
//! - A request names an idempotency key unique per organization: the same key with the same
//!   request gets the first answer again; with another request it is refused.
//! - A *reservation* holds credits for work under way: a `hold` transaction takes them from
//!   the balance (which is what is available to spend) into the account's `held`, refused
//!   like a consumption when the balance is short. Its number is the hold's sequence. A
//!   *capture* of any amount up to the hold spends that much from the grants and returns the
//!   rest to the balance (a `capture` transaction); a *release*, or the end of its time to
//!   live, returns it all (a `release` transaction). Each settles it once: the same capture or
//!   release again gets the first answer; any other is refused.
//! - Held credits do not expire while held: an expiry writes off an expired grant's remaining
//!   only where the unexpired grants do not cover what is held, and a capture spends expired
//!   credits so kept first. What a refund takes back may include held credits; a capture
//!   then spends what is left and the shortfall becomes debt.

mod decide;

pub use decide::decide;

use std::collections::{BTreeMap, HashMap};

/// Credits are whole numbers: never fractions, never floats.
pub type Credits = i64;

/// Unix seconds.
pub type UnixSeconds = i64;

/// The largest amount one request may consume or grant, and one purchase may grant. Large
/// enough for any real use, small enough that no sum of a ledger's amounts can overflow.
pub const MAX_AMOUNT: Credits = 1_000_000_000_000;

/// Whether `credits` is an amount a grant may carry: whole, from 0 to [`MAX_AMOUNT`].
pub fn is_grantable(credits: Credits) -> bool {
    (0..=MAX_AMOUNT).contains(&credits)
}

/// What a purchase of `quantity` units of a price worth `per_unit` credits each grants: the one
/// rule, for the checkout that writes it into the session, the webhook that reads it back and
/// the ledger that credits a purchase whose line items named the price. `None` when either is
/// negative or the product is past [`MAX_AMOUNT`] (checked: no multiplication wraps or
/// saturates into a different number of credits than was paid for).
pub fn purchased_credits(per_unit: Credits, quantity: i64) -> Option<Credits> {
    if per_unit < 0 || quantity < 0 {
        return None;
    }
    per_unit
        .checked_mul(quantity)
        .filter(|credits| is_grantable(*credits))
}

/// Where a grant came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantSource {
    /// A one-time purchase through Stripe Checkout.
    Checkout,
    /// A subscription invoice's line (an allowance that expires at the line's period end).
    Invoice,
    /// The app's backend (`POST /api/v1/credits/grant`).
    Api,
}

impl GrantSource {
    /// The stored text, written in this one place.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantSource::Checkout => "checkout",
            GrantSource::Invoice => "invoice",
            GrantSource::Api => "api",
        }
    }

    /// The source a stored text names.
    pub fn parse(text: &str) -> Option<GrantSource> {
        [
            GrantSource::Checkout,
            GrantSource::Invoice,
            GrantSource::Api,
        ]
        .into_iter()
        .find(|source| source.as_str() == text)
    }
}

/// A grant of credits to one organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The store's id; `None` for a grant this decision made (the store inserts it).
    pub id: Option<i64>,
    /// Where it came from.
    pub source: GrantSource,
    /// The source's unique reference (`checkout:cs_…`, `invoice:in_…:il_…`); none for the API's.
    pub reference: Option<String>,
    /// How many credits it granted.
    pub amount: Credits,
    /// How many are left to spend.
    pub remaining: Credits,
    /// How many expired and were not taken back by a refund since.
    pub expired: Credits,
    /// How many a refund of its payment took back, in all.
    pub taken_back: Credits,
    /// When what remains expires; `None`: never.
    pub expires_at: Option<UnixSeconds>,
    /// When it was recorded: the order among grants expiring together.
    pub created_at: UnixSeconds,
    /// The Stripe payment (`pi_…`) that paid for it, which a refund names.
    pub payment: Option<String>,
    /// Whether it is in the balance yet; `false`: recorded from a webhook, not yet credited.
    pub credited: bool,
}

impl Grant {
    /// Whether it can no longer be spent at `now`.
    pub fn is_expired(&self, now: UnixSeconds) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What a payment's charges say: paid and refunded so far (amounts in the currency's smallest
/// unit; a refund's amounts are cumulative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Payment {
    /// The amount charged.
    pub paid: i64,
    /// The amount refunded so far.
    pub refunded: i64,
}

/// Seconds a reservation may last at most: work longer than a week holds credits nobody can
/// see being spent; the shortest is a second.
pub const MAX_RESERVATION_SECONDS: UnixSeconds = 7 * 24 * 3600;

/// Credits held for work under way ([`Request::Reserve`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Its number in the organization: the sequence of the `hold` transaction that made it.
    pub number: i64,
    /// Credits held.
    pub amount: Credits,
    /// When it is released by itself if not settled.
    pub expires_at: UnixSeconds,
    /// Open, or how it was settled.
    pub settled: Option<Settled>,
}

/// How a reservation was settled, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// Captured (how much), released, or expired.
    pub how: Settlement,
    /// The transaction that settled it.
    pub transaction: i64,
    /// The balance after that transaction.
    pub balance_after: Credits,
}

/// The ways a reservation ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Charged this much (at most the hold); the rest returned.
    Captured(Credits),
    /// Returned whole by a release.
    Released,
    /// Returned whole when its time to live ended.
    Expired,
}

impl Settlement {
    /// The stored and shown text, written in this one place.
    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::Captured(_) => "captured",
            Settlement::Released => "released",
            Settlement::Expired => "expired",
        }
    }

    /// The settlement a stored text and captured amount name.
    pub fn parse(text: &str, captured: Credits) -> Option<Settlement> {
        match text {
            "captured" => Some(Settlement::Captured(captured)),
            "released" => Some(Settlement::Released),
            "expired" => Some(Settlement::Expired),
            _ => None,
        }
    }

    /// Credits it charged.
    pub fn captured(self) -> Credits {
        match self {
            Settlement::Captured(amount) => amount,
            Settlement::Released | Settlement::Expired => 0,
        }
    }
}

/// The kinds of transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A grant from Stripe was credited.
    Grant,
    /// The app's backend granted credits.
    Adjustment,
    /// The app's backend consumed credits.
    Consume,
    /// A refund took credits back.
    Refund,
    /// A grant's remaining expired.
    Expire,
    /// A reservation took credits from the balance into `held`.
    Hold,
    /// A reservation was captured: what was not charged returns (0 when all was).
    Capture,
    /// A reservation was released, or its time to live ended: all of it returns.
    Release,
}

impl Kind {
    /// The stored text, written in this one place.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Grant => "grant",
            Kind::Adjustment => "adjustment",
            Kind::Consume => "consume",
            Kind::Refund => "refund",
            Kind::Expire => "expire",
            Kind::Hold => "hold",
            Kind::Capture => "capture",
            Kind::Release => "release",
        }
    }

    /// The kind a stored text names.
    pub fn parse(text: &str) -> Option<Kind> {
        [
            Kind::Grant,
            Kind::Adjustment,
            Kind::Consume,
            Kind::Refund,
            Kind::Expire,
            Kind::Hold,
            Kind::Capture,
            Kind::Release,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One entry of an organization's ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Its number in the organization's ledger: 1, 2, 3…
    pub sequence: i64,
    /// What moved the credits.
    pub kind: Kind,
    /// Signed: positive adds to the balance.
    pub amount: Credits,
    /// The balance once it is applied.
    pub balance_after: Credits,
    /// The caller's idempotency key (consume and adjustment).
    pub idempotency_key: Option<String>,
    /// The fingerprint of the request the key came with ([`fingerprint`]).
    pub fingerprint: Option<String>,
    /// The grant's source reference (grant, refund, expire).
    pub reference: Option<String>,
    /// The caller's reason.
    pub reason: Option<String>,
    /// When it was decided.
    pub created_at: UnixSeconds,
}

/// What an earlier request with an idempotency key was answered: the transaction it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    /// The fingerprint of that request.
    pub fingerprint: String,
    /// Its transaction's sequence.
    pub sequence: i64,
    /// The balance its transaction left.
    pub balance_after: Credits,
}

/// One organization's account as the store loaded it, locked for the decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// The balance.
    pub balance: Credits,
    /// Credits a refund took back after they were spent, which the next grant pays first.
    pub debt: Credits,
    /// The sequence of the last transaction (0: none yet).
    pub last_sequence: i64,
    /// The grants a decision may touch: every pending one, every one with credits remaining,
    /// and every one whose payment was refunded.
    pub grants: Vec<Grant>,
    /// The refunded payments the grants name, by payment id.
    pub payments: HashMap<String, Payment>,
    /// The earlier answers to the idempotency keys the batch names.
    pub answered: HashMap<String, Answered>,
    /// Credits held by open reservations: the sum of their amounts.
    pub held: Credits,
    /// The reservations a decision may touch, by number: every open one, and those the
    /// batch's requests name (by number, or by the key that made them).
    pub reservations: BTreeMap<i64, Reservation>,
}

impl Account {
    /// Whether the balance and what is held are the remaining of the credited grants less the
    /// debt, and what is held is the open reservations' sum (given every grant with credits
    /// remaining and every open reservation was loaded, and expiries were settled at `now`:
    /// an expired grant then keeps only what holds need).
    pub fn is_consistent(&self, now: UnixSeconds) -> bool {
        let remaining: Credits = self
            .grants
            .iter()
            .filter(|grant| grant.credited)
            .map(|grant| grant.remaining)
            .sum();
        let unexpired: Credits = self
            .grants
            .iter()
            .filter(|grant| grant.credited && !grant.is_expired(now))
            .map(|grant| grant.remaining)
            .sum();
        let open: Credits = self
            .reservations
            .values()
            .filter(|reservation| reservation.settled.is_none())
            .map(|reservation| reservation.amount)
            .sum();
        let kept = remaining - unexpired;
        self.balance + self.held == remaining - self.debt
            && self.held == open
            && kept <= (self.held - unexpired).max(0)
    }
}

/// What a request asks of an organization's account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Spend `amount` credits.
    Consume {
        /// Between 1 and [`MAX_AMOUNT`].
        amount: Credits,
        /// The caller's idempotency key.
        key: String,
        /// The caller's reason, kept in the transaction.
        reason: Option<String>,
    },
    /// Grant `amount` credits (a promotion, a support adjustment).
    Grant {
        /// Between 1 and [`MAX_AMOUNT`].
        amount: Credits,
        /// When they expire; `None`: never.
        expires_at: Option<UnixSeconds>,
        /// The caller's idempotency key.
        key: String,
        /// The caller's reason.
        reason: Option<String>,
    },
    /// Hold `amount` credits for `seconds` (1 to [`MAX_RESERVATION_SECONDS`]).
    Reserve {
        /// Between 1 and [`MAX_AMOUNT`].
        amount: Credits,
        /// Its time to live.
        seconds: UnixSeconds,
        /// The caller's idempotency key.
        key: String,
        /// The caller's reason, kept in the hold.
        reason: Option<String>,
    },
    /// Charge `amount` (0 up to the hold) of reservation `reservation`; the rest returns.
    Capture {
        /// The reservation's number.
        reservation: i64,
        /// Credits to charge.
        amount: Credits,
    },
    /// Return all of reservation `reservation`.
    Release {
        /// The reservation's number.
        reservation: i64,
    },
    /// Nothing but settling what is due (pending grants, refunds, expiries): a read's way to
    /// see a ledger that explains its balance.
    Settle,
}

impl Request {
    /// The idempotency key it names, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Request::Consume { key, .. }
            | Request::Grant { key, .. }
            | Request::Reserve { key, .. } => Some(key),
            Request::Capture { .. } | Request::Release { .. } | Request::Settle => None,
        }
    }

    /// The reservation it settles, if any.
    pub fn reservation(&self) -> Option<i64> {
        match self {
            Request::Capture { reservation, .. } | Request::Release { reservation } => {
                Some(*reservation)
            }
            _ => None,
        }
    }
}

/// Everything that makes two requests with one key the same request: the operation and its
/// body. Stored with the key's transaction; a repeat must match it.
pub fn fingerprint(request: &Request) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut field = |value: &str| {
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value.as_bytes());
    };
    match request {
        Request::Consume { amount, reason, .. } => {
            field("consume");
            field(&amount.to_string());
            field(reason.as_deref().unwrap_or("\u{0}none"));
        }
        Request::Grant {
            amount,
            expires_at,
            reason,
            ..
        } => {
            field("grant");
            field(&amount.to_string());
            field(&expires_at.map_or("never".to_owned(), |at| at.to_string()));
            field(reason.as_deref().unwrap_or("\u{0}none"));
        }
        Request::Reserve {
            amount,
            seconds,
            reason,
            ..
        } => {
            field("reserve");
            field(&amount.to_string());
            field(&seconds.to_string());
            field(reason.as_deref().unwrap_or("\u{0}none"));
        }
        Request::Capture { .. } | Request::Release { .. } | Request::Settle => field("settle"),
    }
    hex::encode(hash.finalize())
}

/// What a request is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Consumed or granted (now, or by the first request with this key): the transaction and
    /// the balance it left.
    Done {
        /// The transaction's sequence.
        transaction: i64,
        /// The balance after it.
        balance: Credits,
    },
    /// Not enough credits: nothing changed.
    Insufficient {
        /// The balance, short of the amount.
        balance: Credits,
    },
    /// The key was used before with another request: nothing changed.
    KeyReused,
    /// A grant whose `expires_at` had passed when it was decided: nothing changed (it could
    /// never be spent).
    AlreadyExpired,
    /// Settled; the balance now.
    Settled {
        /// The balance.
        balance: Credits,
    },
    /// Reserved (now, or by the first request with this key).
    Reserved {
        /// The reservation's number (its hold's transaction).
        reservation: i64,
        /// When it is released by itself.
        expires_at: UnixSeconds,
        /// The balance after the hold.
        balance: Credits,
    },
    /// The reservation is settled (now, or by the same capture or release before).
    ReservationSettled {
        /// Its number.
        reservation: i64,
        /// How.
        settled: Settled,
    },
    /// No reservation has that number: nothing changed.
    NoSuchReservation,
    /// The reservation was settled otherwise before (captured, released or expired): nothing
    /// changed.
    ReservationAlreadySettled {
        /// How it was.
        settled: Settled,
    },
    /// A capture of more than the hold: nothing changed.
    CaptureExceedsHold {
        /// What is held.
        held: Credits,
    },
}

/// What a decision asks the store to write, besides the account's own row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// One answer per request, in order.
    pub answers: Vec<Answer>,
    /// The transactions to append, in sequence order.
    pub transactions: Vec<Transaction>,
    /// The indices in [`Account::grants`] of the grants to write (new ones have no id).
    pub changed_grants: Vec<usize>,
    /// The numbers in [`Account::reservations`] of the reservations to write (new or settled).
    pub changed_reservations: Vec<i64>,
}

impl Decisions {
    /// Whether they ask nothing to be written: every request refused or repeated, nothing due.
    pub fn write_nothing(&self) -> bool {
        self.transactions.is_empty()
            && self.changed_grants.is_empty()
            && self.changed_reservations.is_empty()
    }
}
