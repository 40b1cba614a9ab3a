//! Credits: the app's backend spends and grants an organization's credits with an API key;
//! a member's browser reads its organization's ledger. Transport-free: the HTTP mapping lives
//! in [`api`]; the rules in `billing_sync_credits`; the writer batches requests ([`writer`]).

pub mod api;
pub mod keys;
pub mod reservations;
mod text;
pub mod writer;

use std::sync::Arc;

use billing_sync_credits::{
    Answer, Credits as Amount, MAX_AMOUNT, MAX_RESERVATION_SECONDS, Request, Settled, UnixSeconds,
};
use billing_sync_store::credits::CreditStatement;
use billing_sync_store::{Store, StoreError};

use crate::access::{Access, AccessError, Caller, Gate};
use billing_sync_store::retry::WriteError;
use keys::ApiKeys;
use writer::LedgerWriter;

/// The longest organization id, idempotency key and reason accepted (characters).
pub const MAX_ID_LENGTH: usize = 255;
/// See [`MAX_ID_LENGTH`].
pub const MAX_REASON_LENGTH: usize = 1_000;
/// The most transactions one statement lists.
pub const MAX_PAGE: u64 = 100;

/// A consumption or grant the ledger recorded: its transaction and the balance it left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The transaction's number in the organization's ledger.
    pub transaction: i64,
    /// The balance after it.
    pub balance: Amount,
}

/// A reservation as a reserve, capture or release left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservationState {
    /// Its number in the organization (its hold's transaction).
    pub reservation: i64,
    /// Open until when, or how it was settled.
    pub state: Held,
    /// The balance after the transaction that made or settled it.
    pub balance: Amount,
}

/// Open or settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Held until this time (unix seconds), then released by itself.
    Until(UnixSeconds),
    /// Settled.
    Settled(Settled),
}

/// Why a credits request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CreditsError {
    /// No key, or not one of `BILLING_API_KEYS`.
    #[error("missing or unknown API key")]
    Unauthorized,
    /// `BILLING_API_KEYS` is not set: the server-to-server API is off.
    #[error("BILLING_API_KEYS is not set")]
    NotConfigured,
    /// A field is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// Not enough credits: nothing changed.
    #[error("insufficient credits (balance {balance})")]
    Insufficient {
        /// The balance.
        balance: Amount,
    },
    /// The idempotency key was used with another request.
    #[error("idempotency key reused with another request")]
    KeyReused,
    /// No reservation of the organization has that number.
    #[error("no such reservation")]
    NoSuchReservation,
    /// The reservation was settled another way before: nothing changed.
    #[error("reservation already settled")]
    AlreadySettled(Settled),
    /// The database is unavailable for the moment: retry with the same key.
    #[error("{0}")]
    Unavailable(String),
    /// The database refused.
    #[error("{0}")]
    Failed(String),
    /// A browser caller was refused.
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl From<WriteError> for CreditsError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Unavailable(message) => CreditsError::Unavailable(message),
            WriteError::Failed(message) => CreditsError::Failed(message),
        }
    }
}

impl From<StoreError> for CreditsError {
    fn from(err: StoreError) -> Self {
        WriteError::from(err).into()
    }
}

/// The credits operations.
pub struct Credits {
    access: Arc<Access>,
    writer: LedgerWriter,
    keys: Option<Arc<ApiKeys>>,
    credits_metadata_key: String,
}

impl Credits {
    /// The operations on `access`'s store, admitting the app's backend by `keys` (none: the
    /// server-to-server operations answer that they are not configured), reading a price's
    /// credits per unit from its catalog metadata `credits_metadata_key`. Starts the ledger's
    /// writer on the current tokio runtime.
    pub fn new(
        access: Arc<Access>,
        keys: Option<Arc<ApiKeys>>,
        credits_metadata_key: String,
    ) -> Self {
        let writer = LedgerWriter::start(access.store().clone(), credits_metadata_key.clone());
        Credits {
            access,
            writer,
            keys,
            credits_metadata_key,
        }
    }

    fn store(&self) -> &Store {
        self.access.store()
    }

    /// Whether `key` may call the server-to-server operations.
    pub fn authenticate(&self, key: Option<&str>) -> Result<(), CreditsError> {
        let keys = self.keys.as_ref().ok_or(CreditsError::NotConfigured)?;
        match key {
            Some(key) if keys.admits(key) => Ok(()),
            _ => Err(CreditsError::Unauthorized),
        }
    }

    /// Spends `amount` of the organization's credits, once per `key`.
    pub async fn consume(
        &self,
        organization_id: &str,
        amount: Amount,
        key: &str,
        reason: Option<&str>,
    ) -> Result<Recorded, CreditsError> {
        check_request(organization_id, amount, key, reason)?;
        let request = Request::Consume {
            amount,
            key: key.to_owned(),
            reason: reason.map(str::to_owned),
        };
        recorded(self.writer.submit(organization_id, request).await?)
    }

    /// Grants `amount` credits to the organization, expiring at `expires_at` (never when
    /// none), once per `key`.
    pub async fn grant(
        &self,
        organization_id: &str,
        amount: Amount,
        expires_at: Option<UnixSeconds>,
        key: &str,
        reason: Option<&str>,
    ) -> Result<Recorded, CreditsError> {
        check_request(organization_id, amount, key, reason)?;
        let request = Request::Grant {
            amount,
            expires_at,
            key: key.to_owned(),
            reason: reason.map(str::to_owned),
        };
        recorded(self.writer.submit(organization_id, request).await?)
    }

    /// Holds `amount` of the organization's credits for `seconds`, once per `key`.
    pub async fn reserve(
        &self,
        organization_id: &str,
        amount: Amount,
        seconds: UnixSeconds,
        key: &str,
        reason: Option<&str>,
    ) -> Result<ReservationState, CreditsError> {
        check_request(organization_id, amount, key, reason)?;
        if !(1..=MAX_RESERVATION_SECONDS).contains(&seconds) {
            return Err(CreditsError::Invalid(format!(
                "`ttl_seconds` must be a whole number between 1 and {MAX_RESERVATION_SECONDS} \
                 (a week)."
            )));
        }
        let request = Request::Reserve {
            amount,
            seconds,
            key: key.to_owned(),
            reason: reason.map(str::to_owned),
        };
        reservation(self.writer.submit(organization_id, request).await?)
    }

    /// Charges `amount` (0 up to what it holds) of reservation `number`; the rest returns to
    /// the balance. The same capture again gets the same answer.
    pub async fn capture(
        &self,
        organization_id: &str,
        number: i64,
        amount: Amount,
    ) -> Result<ReservationState, CreditsError> {
        check_text("organization_id", organization_id, 1, MAX_ID_LENGTH)?;
        if !(0..=MAX_AMOUNT).contains(&amount) {
            return Err(CreditsError::Invalid(format!(
                "`amount` must be a whole number between 0 and {MAX_AMOUNT}."
            )));
        }
        let request = Request::Capture {
            reservation: number,
            amount,
        };
        reservation(self.writer.submit(organization_id, request).await?)
    }

    /// Returns all of reservation `number` to the balance. Releasing it again, or after it
    /// expired, answers how it ended.
    pub async fn release(
        &self,
        organization_id: &str,
        number: i64,
    ) -> Result<ReservationState, CreditsError> {
        check_text("organization_id", organization_id, 1, MAX_ID_LENGTH)?;
        let request = Request::Release {
            reservation: number,
        };
        reservation(self.writer.submit(organization_id, request).await?)
    }

    /// The organization's balance, once what is due is settled (credits bought and not yet
    /// credited, refunds, expiries).
    pub async fn balance(&self, organization_id: &str) -> Result<Amount, CreditsError> {
        check_text("organization_id", organization_id, 1, MAX_ID_LENGTH)?;
        let now = unix_now();
        if let Some(balance) = self
            .store()
            .balance_if_nothing_due(organization_id, &self.credits_metadata_key, now)
            .await?
        {
            return Ok(balance);
        }
        match self.writer.submit(organization_id, Request::Settle).await? {
            Answer::Settled { balance } => Ok(balance),
            other => Err(CreditsError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// The organization's ledger, settled: the balance, the grants with credits left and up
    /// to `limit` transactions older than `before`, newest first.
    pub async fn statement(
        &self,
        organization_id: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<CreditStatement, CreditsError> {
        self.balance(organization_id).await?;
        Ok(self
            .store()
            .credit_statement(organization_id, before, limit.clamp(1, MAX_PAGE))
            .await?)
    }

    /// The caller's organization's ledger ([`Credits::statement`]), for any member.
    pub async fn caller_statement(
        &self,
        token: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<(Caller, CreditStatement), CreditsError> {
        let caller = self.access.caller(token, Gate::Member).await?;
        let statement = self
            .statement(&caller.organization_id, before, limit)
            .await?;
        Ok((caller, statement))
    }
}

/// Now, as the ledger's decisions and reads take it.
fn unix_now() -> UnixSeconds {
    chrono::Utc::now().timestamp()
}

fn recorded(answer: Answer) -> Result<Recorded, CreditsError> {
    match answer {
        Answer::Done {
            transaction,
            balance,
        } => Ok(Recorded {
            transaction,
            balance,
        }),
        Answer::Insufficient { balance } => Err(CreditsError::Insufficient { balance }),
        Answer::KeyReused => Err(CreditsError::KeyReused),
        Answer::AlreadyExpired => Err(CreditsError::Invalid(
            "expires_at has passed: credits that have expired could never be spent. Give a \
             later time, or leave expires_at out for credits that never expire."
                .into(),
        )),
        other => Err(CreditsError::Failed(format!(
            "a consume or grant answered {other:?}"
        ))),
    }
}

fn reservation(answer: Answer) -> Result<ReservationState, CreditsError> {
    match answer {
        Answer::Reserved {
            reservation,
            expires_at,
            balance,
        } => Ok(ReservationState {
            reservation,
            state: Held::Until(expires_at),
            balance,
        }),
        Answer::ReservationSettled {
            reservation,
            settled,
        } => Ok(ReservationState {
            reservation,
            state: Held::Settled(settled),
            balance: settled.balance_after,
        }),
        Answer::Insufficient { balance } => Err(CreditsError::Insufficient { balance }),
        Answer::KeyReused => Err(CreditsError::KeyReused),
        Answer::NoSuchReservation => Err(CreditsError::NoSuchReservation),
        Answer::ReservationAlreadySettled { settled } => Err(CreditsError::AlreadySettled(settled)),
        Answer::CaptureExceedsHold { held } => Err(CreditsError::Invalid(format!(
            "`amount` is more than the reservation holds ({held}): capture at most {held}, and \
             consume any more with its own idempotency key."
        ))),
        other => Err(CreditsError::Failed(format!(
            "a reservation request answered {other:?}"
        ))),
    }
}

/// The bounds every consume, grant and reservation is held to, for callers that are not the
/// HTTP API. The request schemas say them again as literals (poem-openapi's validator
/// attributes take no constants); a test holds the document to these constants.
fn check_request(
    organization_id: &str,
    amount: Amount,
    key: &str,
    reason: Option<&str>,
) -> Result<(), CreditsError> {
    check_text("organization_id", organization_id, 1, MAX_ID_LENGTH)?;
    check_text("idempotency_key", key, 1, MAX_ID_LENGTH)?;
    if let Some(reason) = reason {
        check_text("reason", reason, 0, MAX_REASON_LENGTH)?;
    }
    if !(1..=MAX_AMOUNT).contains(&amount) {
        return Err(CreditsError::Invalid(format!(
            "`amount` must be a whole number between 1 and {MAX_AMOUNT}."
        )));
    }
    Ok(())
}

/// A text field: `min` to `max` characters, none of them NUL (which PostgreSQL's text
/// refuses).
fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), CreditsError> {
    let length = value.chars().count();
    if length < min || length > max || value.contains('\0') {
        return Err(CreditsError::Invalid(format!(
            "`{field}` must be {min} to {max} characters, without NUL."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MAX_ID_LENGTH, MAX_REASON_LENGTH};
    use billing_sync_credits::{MAX_AMOUNT, MAX_RESERVATION_SECONDS};

    /// The committed OpenAPI document (which a test holds to the served one) says the same
    /// bounds as the constants the checks use.
    #[test]
    fn the_documented_bounds_are_the_checked_ones() {
        let document: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../openapi/openapi.json"
        )))
        .expect("the committed document");
        let schemas = &document["components"]["schemas"];
        let bound = |schema: &str, field: &str, bound: &str| {
            schemas[schema]["properties"][field][bound]
                .as_f64()
                .unwrap_or_else(|| panic!("{schema}.{field} has a {bound}"))
        };
        for schema in ["ConsumeRequest", "GrantRequest", "ReserveRequest"] {
            assert_eq!(
                bound(schema, "amount", "maximum"),
                MAX_AMOUNT as f64,
                "{schema}"
            );
            assert_eq!(bound(schema, "amount", "minimum"), 1.0, "{schema}");
            for field in ["organization_id", "idempotency_key"] {
                assert_eq!(bound(schema, field, "maxLength"), MAX_ID_LENGTH as f64);
            }
            assert_eq!(
                bound(schema, "reason", "maxLength"),
                MAX_REASON_LENGTH as f64
            );
        }
        assert_eq!(
            bound("CaptureRequest", "amount", "maximum"),
            MAX_AMOUNT as f64
        );
        assert_eq!(
            bound("ReserveRequest", "ttl_seconds", "maximum"),
            MAX_RESERVATION_SECONDS as f64
        );
        for schema in ["CaptureRequest", "ReleaseRequest"] {
            assert_eq!(
                bound(schema, "organization_id", "maxLength"),
                MAX_ID_LENGTH as f64
            );
        }
    }
}
