//! The credits operations on the wire: the app backend's (`/api/v1/credits/…`,
//! `/api/v1/organizations/{id}/billing`, authenticated by an API key) and the browser's
//! (`/api/v1/operations/payment/credits`, by the Clerk session).

use std::sync::Arc;

use billing_sync_credits::Kind;
use billing_sync_store::credits::CreditStatement;
use billing_sync_store::entities::{credit_grants, credit_transactions};
use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::text::Text;
use super::{Credits, CreditsError, Recorded};
use crate::api_key::{API_KEY_REQUIRED, BillingApiKey};
use crate::http::{ApiTags, ClerkSession, ErrorBody, ErrorCode, NO_STORE, Refusal, body, refusal};
use crate::plans::Plans;
use crate::plans::api::{BillingState, billing_state};

/// An organization's billing state as the app's backend reads it (`organizationBilling`), and
/// as billing events carry it: the one place it is put together without a user session.
pub async fn organization_billing(
    plans: &Plans,
    credits: &Credits,
    organization_id: &str,
) -> Result<BillingState, CreditsError> {
    let balance = credits.balance(organization_id).await?;
    let (caller, subscriptions) = plans.organization_state(organization_id).await?;
    Ok(billing_state(caller, subscriptions, balance))
}

/// Spend an organization's credits.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ConsumeRequest {
    /// The Clerk organization (`org_…`).
    #[oai(validator(min_length = 1, max_length = 255))]
    pub organization_id: Text,
    /// Credits to spend: a whole number from 1 to 10^12.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000000")))]
    pub amount: i64,
    /// Chosen by the caller, unique per organization (1 to 255 characters): the same key
    /// again gets the first answer and spends nothing more; with another body it is refused.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub idempotency_key: Text,
    /// Why, kept in the transaction (up to 1,000 characters); leave it out rather than null.
    #[oai(validator(max_length = 1000))]
    pub reason: MaybeUndefined<Text>,
}

/// Grant an organization credits (a promotion, a support adjustment).
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct GrantRequest {
    /// The Clerk organization (`org_…`).
    #[oai(validator(min_length = 1, max_length = 255))]
    pub organization_id: Text,
    /// Credits to grant: a whole number from 1 to 10^12.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000000")))]
    pub amount: i64,
    /// When the granted credits expire, in the future (a time already passed is refused);
    /// absent: never (leave it out rather than null).
    pub expires_at: MaybeUndefined<DateTime<Utc>>,
    /// As for `consume`.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub idempotency_key: Text,
    /// Why, kept in the transaction (up to 1,000 characters); leave it out rather than null.
    #[oai(validator(max_length = 1000))]
    pub reason: MaybeUndefined<Text>,
}

impl poem_openapi::types::Example for GrantRequest {
    /// docs/credits.md's grant: an `expires_at` that has not passed (the schema cannot say that one
    /// must not have, and a generated client's tests take the example).
    fn example() -> Self {
        GrantRequest {
            organization_id: Text("org_123".into()),
            amount: 500,
            expires_at: MaybeUndefined::Value(
                DateTime::from_timestamp(1_924_991_999, 0).expect("2030-12-31T23:59:59Z"),
            ),
            idempotency_key: Text("promo-2030".into()),
            reason: MaybeUndefined::Undefined,
        }
    }
}

/// The value of an optional field, which the schema does not let be null: absent is `None`,
/// null is refused.
pub(crate) fn optional<T>(
    field: &str,
    value: MaybeUndefined<T>,
) -> Result<Option<T>, CreditsError> {
    match value {
        MaybeUndefined::Value(value) => Ok(Some(value)),
        MaybeUndefined::Undefined => Ok(None),
        MaybeUndefined::Null => Err(CreditsError::Invalid(format!(
            "`{field}` may be left out, but not null."
        ))),
    }
}

/// A transaction the ledger recorded.
#[derive(Debug, Object)]
pub struct LedgerEntry {
    /// The organization's balance after it.
    pub balance: i64,
    /// Its number in the organization's ledger (1, 2, 3…).
    pub transaction_id: i64,
}

/// An error answer of `consume` and `grant`: the error body every operation answers with, and
/// the balance when the refusal is `INSUFFICIENT_CREDITS` (one body for every refusal of an
/// operation, as generated clients expect). Codes: `VALIDATION_ERROR`, `UNAUTHORIZED`,
/// `INSUFFICIENT_CREDITS`, `IDEMPOTENCY_KEY_REUSED`, `INTERNAL_ERROR` or `UNAVAILABLE`.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreditsErrorBody {
    /// The error body's fields, written inline.
    #[oai(flatten)]
    pub error: ErrorBody,
    /// The balance, with `INSUFFICIENT_CREDITS`.
    pub balance: Option<i64>,
}

/// The error body as the write operations' own.
pub(crate) fn without_balance(Json(error): Json<ErrorBody>) -> Json<CreditsErrorBody> {
    Json(CreditsErrorBody {
        error,
        balance: None,
    })
}

/// An organization's credits.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreditsStatement {
    /// The Clerk organization.
    pub organization_id: String,
    /// Credits available: the remaining of the grants, less what reservations hold, less any
    /// debt a refund of already spent credits left (then negative, and consumption is refused
    /// until topped up).
    pub balance: i64,
    /// Credits held by open reservations (not in `balance`).
    pub held: i64,
    /// The open reservations, the one expiring first first.
    pub reservations: Vec<OpenReservation>,
    /// The grants with credits left, the one spent first (expiring first, then oldest) first.
    pub grants: Vec<CreditGrant>,
    /// Transactions, newest first.
    pub transactions: Vec<CreditTransaction>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// A reservation not settled yet.
#[derive(Debug, Object)]
pub struct OpenReservation {
    /// What `reserve` answered.
    pub reservation_id: i64,
    /// Credits held.
    pub amount: i64,
    /// When it is released by itself.
    pub expires_at: DateTime<Utc>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A grant with credits left.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreditGrant {
    /// `checkout` (a one-time purchase), `invoice` (a subscription's allowance) or `api`.
    pub source: String,
    /// The purchase: `checkout:cs_…` or `invoice:in_…:il_…`.
    pub reference: Option<String>,
    /// Credits granted.
    pub amount: i64,
    /// Credits left.
    pub remaining: i64,
    /// When what is left expires; absent: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// A transaction of the ledger.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreditTransaction {
    /// Its number in the organization's ledger.
    pub transaction_id: i64,
    /// `grant`, `adjustment`, `consume`, `refund`, `expire`, `hold` (a reservation took
    /// credits from the balance), `capture` (it was captured: the part not charged returns) or
    /// `release` (released, or its time to live ended: all of it returns).
    pub kind: String,
    /// Signed: positive added credits.
    pub amount: i64,
    /// The balance after it.
    pub balance_after: i64,
    /// The grant's purchase (grant, refund, expire), or `reservation:<reservation_id>` (hold,
    /// capture, release).
    pub reference: Option<String>,
    /// The caller's idempotency key (consume, adjustment).
    pub idempotency_key: Option<String>,
    /// The caller's reason.
    pub reason: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// The answers of `consume` and `grant`.
#[derive(ApiResponse)]
pub enum LedgerWriteResponse {
    /// Recorded (now, or by the first request with this key).
    #[oai(status = 200)]
    Recorded(Json<LedgerEntry>),
    /// `VALIDATION_ERROR`: a field is missing or out of bounds; nothing changed.
    #[oai(status = 400)]
    BadRequest(Json<CreditsErrorBody>),
    /// `UNAUTHORIZED`: no API key, or not one of `BILLING_API_KEYS`.
    #[oai(status = 401)]
    Unauthorized(
        Json<CreditsErrorBody>,
        /// `Bearer`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `INSUFFICIENT_CREDITS` (with the balance; nothing changed) or `IDEMPOTENCY_KEY_REUSED`
    /// (the key was used with another request; nothing changed).
    #[oai(status = 409)]
    Conflict(Json<CreditsErrorBody>),
    /// `INTERNAL_ERROR`: not configured, or the database refused.
    #[oai(status = 500)]
    Internal(Json<CreditsErrorBody>),
    /// `UNAVAILABLE`: the database is unavailable; nothing was recorded. Retry with the same
    /// idempotency key.
    #[oai(status = 503)]
    Unavailable(
        Json<CreditsErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        String,
    ),
}

/// The answers of the reads.
#[derive(ApiResponse)]
pub enum StatementResponse {
    /// The organization's credits.
    #[oai(status = 200)]
    Statement(
        Json<CreditsStatement>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: a parameter is out of bounds, or (browser) the user is not
    /// associated with an organization.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `UNAUTHORIZED`: no valid API key (backend) or Clerk session token (browser).
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `INTERNAL_ERROR`.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `UNAVAILABLE`: the database is unavailable. Retry.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        String,
    ),
}

/// The answers of `organizationBilling`.
#[derive(ApiResponse)]
pub enum OrganizationBillingResponse {
    /// The organization's billing state (an organization never synced: no customer, empty
    /// lists, `active` false, no credits).
    #[oai(status = 200)]
    State(
        Json<BillingState>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `VALIDATION_ERROR`: the organization id is out of bounds.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `UNAUTHORIZED`: no API key, or not one of `BILLING_API_KEYS`.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `INTERNAL_ERROR`.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// `UNAVAILABLE`: the database is unavailable. Retry.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        String,
    ),
}

/// How long a caller told `UNAVAILABLE` waits before retrying.
pub(crate) const RETRY_AFTER_SECONDS: &str = "1";

/// How a credits refusal is answered, whatever the operation: one place for codes and words.
pub(crate) enum Answer {
    BadRequest(Json<ErrorBody>),
    Unauthorized(Json<ErrorBody>),
    Conflict(Json<CreditsErrorBody>),
    /// Only a reservation's capture or release, naming one that does not exist.
    NotFound(Json<ErrorBody>),
    Internal(Json<ErrorBody>),
    Unavailable(Json<ErrorBody>),
}

pub(crate) fn answer(err: &CreditsError, operation: &'static str) -> Answer {
    match err {
        CreditsError::Unauthorized => {
            tracing::info!(operation, "refused: missing or unknown API key");
            Answer::Unauthorized(body(ErrorCode::Unauthorized, API_KEY_REQUIRED))
        }
        CreditsError::NotConfigured => {
            tracing::error!(operation, "BILLING_API_KEYS is not set");
            Answer::Internal(body(
                ErrorCode::InternalError,
                "The credits API is not configured on this server (BILLING_API_KEYS).",
            ))
        }
        CreditsError::Invalid(message) => {
            Answer::BadRequest(body(ErrorCode::ValidationError, message))
        }
        CreditsError::Insufficient { balance } => Answer::Conflict(Json(CreditsErrorBody {
            error: ErrorBody::new(
                ErrorCode::InsufficientCredits,
                format!(
                    "The organization has {balance} credits, fewer than asked for; nothing was \
                     spent."
                ),
            ),
            balance: Some(*balance),
        })),
        CreditsError::NoSuchReservation => Answer::NotFound(body(
            ErrorCode::ReservationNotFound,
            "The organization has no reservation with this reservation_id: pass the one \
             `reserve` answered, with the same organization_id.",
        )),
        CreditsError::AlreadySettled(settled) => Answer::Conflict(without_balance(body(
            ErrorCode::ReservationSettled,
            &format!(
                "The reservation was {} before (transaction {}); nothing changed. A capture \
                 after it ended is refused: consume with an idempotency key instead.",
                settled.how.as_str(),
                settled.transaction
            ),
        ))),
        CreditsError::KeyReused => Answer::Conflict(without_balance(body(
            ErrorCode::IdempotencyKeyReused,
            "This idempotency key was used with another request; use a new key for a new \
             request.",
        ))),
        CreditsError::Unavailable(cause) => {
            tracing::warn!(operation, cause = %cause, "credits: database unavailable");
            Answer::Unavailable(body(
                ErrorCode::Unavailable,
                "The ledger is unavailable for the moment; nothing was recorded. Retry with \
                 the same idempotency key.",
            ))
        }
        CreditsError::Failed(cause) => {
            tracing::error!(operation, cause = %cause, "credits: the database refused");
            Answer::Internal(body(
                ErrorCode::InternalError,
                "The ledger could not be written. Please try again.",
            ))
        }
        CreditsError::Access(access) => match refusal(access, operation) {
            Refusal::BadRequest(body) => Answer::BadRequest(body),
            Refusal::Unauthorized(body) => Answer::Unauthorized(body),
            Refusal::Forbidden(body) | Refusal::Internal(body) => Answer::Internal(body),
        },
    }
}

impl From<Answer> for LedgerWriteResponse {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::BadRequest(body) => Self::BadRequest(without_balance(body)),
            Answer::Unauthorized(body) => {
                Self::Unauthorized(without_balance(body), "Bearer".into())
            }
            Answer::Conflict(body) => Self::Conflict(body),
            Answer::Internal(body) | Answer::NotFound(body) => {
                Self::Internal(without_balance(body))
            }
            Answer::Unavailable(body) => {
                Self::Unavailable(without_balance(body), RETRY_AFTER_SECONDS.into())
            }
        }
    }
}

impl From<Answer> for StatementResponse {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::BadRequest(body) => Self::BadRequest(body),
            Answer::Unauthorized(body) => Self::Unauthorized(body, "Bearer".into()),
            Answer::Conflict(conflict) => {
                Self::Internal(body(ErrorCode::InternalError, &conflict.error.message))
            }
            Answer::Internal(body) | Answer::NotFound(body) => Self::Internal(body),
            Answer::Unavailable(body) => Self::Unavailable(body, RETRY_AFTER_SECONDS.into()),
        }
    }
}

impl From<Answer> for OrganizationBillingResponse {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::BadRequest(body) => Self::BadRequest(body),
            Answer::Unauthorized(body) => Self::Unauthorized(body, "Bearer".into()),
            Answer::Conflict(conflict) => {
                Self::Internal(body(ErrorCode::InternalError, &conflict.error.message))
            }
            Answer::Internal(body) | Answer::NotFound(body) => Self::Internal(body),
            Answer::Unavailable(body) => Self::Unavailable(body, RETRY_AFTER_SECONDS.into()),
        }
    }
}

impl Answer {
    /// Its `outcome` in `billing_sync_credits_requests_total`: its code, in lower case.
    fn outcome(&self) -> String {
        let error = match self {
            Answer::Conflict(conflict) => &conflict.0.error,
            Answer::BadRequest(body)
            | Answer::Unauthorized(body)
            | Answer::NotFound(body)
            | Answer::Internal(body)
            | Answer::Unavailable(body) => &body.0,
        };
        error.code.to_ascii_lowercase()
    }
}

/// The response of a ledger write (`operation`): `ok`'s of what it recorded, or its refusal's;
/// either counted in `billing_sync_credits_requests_total` by its outcome (`recorded`, or the
/// refusal's).
pub(crate) fn counted<T, R: From<Answer>>(
    result: Result<T, CreditsError>,
    operation: &'static str,
    ok: impl FnOnce(T) -> R,
) -> R {
    let (response, outcome) = match result {
        Ok(done) => (ok(done), "recorded".to_owned()),
        Err(err) => {
            let refusal = answer(&err, operation);
            let outcome = refusal.outcome();
            (refusal.into(), outcome)
        }
    };
    metrics::counter!("billing_sync_credits_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    response
}

fn recorded(
    result: Result<Recorded, CreditsError>,
    operation: &'static str,
) -> LedgerWriteResponse {
    counted(result, operation, |recorded| {
        LedgerWriteResponse::Recorded(Json(LedgerEntry {
            balance: recorded.balance,
            transaction_id: recorded.transaction,
        }))
    })
}

pub(crate) fn time(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

fn statement(organization_id: String, statement: CreditStatement, limit: u64) -> CreditsStatement {
    let next_before = (statement.transactions.len() as u64 >= limit)
        .then(|| statement.transactions.last().map(|t| t.sequence))
        .flatten()
        .filter(|sequence| *sequence > 1);
    CreditsStatement {
        organization_id,
        balance: statement.balance,
        held: statement.held,
        reservations: statement
            .reservations
            .into_iter()
            .map(|row| OpenReservation {
                reservation_id: row.number,
                amount: row.amount,
                expires_at: time(row.expires_at),
                created_at: time(row.created_at),
            })
            .collect(),
        grants: statement.grants.into_iter().map(grant).collect(),
        transactions: statement
            .transactions
            .into_iter()
            .map(transaction)
            .collect(),
        next_before,
    }
}

fn grant(row: credit_grants::Model) -> CreditGrant {
    CreditGrant {
        source: row.source,
        reference: row.reference,
        amount: row.amount.unwrap_or(0),
        remaining: row.remaining,
        expires_at: row.expires_at.map(time),
        created_at: time(row.created_at),
    }
}

fn transaction(row: credit_transactions::Model) -> CreditTransaction {
    CreditTransaction {
        transaction_id: row.sequence,
        kind: Kind::parse(&row.kind).map_or(row.kind.clone(), |kind| kind.as_str().to_owned()),
        amount: row.amount,
        balance_after: row.balance_after,
        reference: row.reference,
        idempotency_key: row.idempotency_key,
        reason: row.reason,
        created_at: time(row.created_at),
    }
}

/// Transactions listed when `limit` is absent.
const DEFAULT_PAGE: u64 = 50;

/// The credits operations.
pub struct CreditsApi {
    credits: Arc<Credits>,
    plans: Arc<Plans>,
}

impl CreditsApi {
    /// The operations backed by `credits`, and by `plans` for an organization's billing state.
    pub fn new(credits: Arc<Credits>, plans: Arc<Plans>) -> Self {
        CreditsApi { credits, plans }
    }
}

#[OpenApi(tag = "ApiTags::Credits")]
impl CreditsApi {
    /// Consume credits
    ///
    /// Spends `amount` of the organization's credits, from the grant that expires first, then
    /// the oldest. Exactly once per `idempotency_key`: a retry (after a timeout, from another
    /// replica, after a restart) gets the first answer without a second debit. Refused with
    /// `INSUFFICIENT_CREDITS` when the balance is short: nothing is spent, and the refusal is
    /// not remembered (the same key succeeds once the organization has the credits).
    #[oai(
        path = "/api/v1/credits/consume",
        method = "post",
        operation_id = "consumeCredits"
    )]
    async fn consume(
        &self,
        key: BillingApiKey,
        request: Json<ConsumeRequest>,
    ) -> LedgerWriteResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return recorded(Err(err), "consume");
        }
        let request = request.0;
        let reason = match optional("reason", request.reason) {
            Ok(reason) => reason,
            Err(err) => return recorded(Err(err), "consume"),
        };
        let result = self
            .credits
            .consume(
                &request.organization_id.0,
                request.amount,
                &request.idempotency_key.0,
                reason.map(|reason| reason.0).as_deref(),
            )
            .await;
        recorded(result, "consume")
    }

    /// Grant credits
    ///
    /// Grants the organization `amount` credits (a promotion, a support adjustment; recorded
    /// as an `adjustment`), expiring at `expires_at` when given. A grant pays any debt a refund
    /// left first. Exactly once per `idempotency_key`, as for `consume`.
    #[oai(
        path = "/api/v1/credits/grant",
        method = "post",
        operation_id = "grantCredits"
    )]
    async fn grant(&self, key: BillingApiKey, request: Json<GrantRequest>) -> LedgerWriteResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return recorded(Err(err), "grant");
        }
        let request = request.0;
        let fields = optional("reason", request.reason)
            .and_then(|reason| Ok((reason, optional("expires_at", request.expires_at)?)));
        let (reason, expires_at) = match fields {
            Ok(fields) => fields,
            Err(err) => return recorded(Err(err), "grant"),
        };
        let result = self
            .credits
            .grant(
                &request.organization_id.0,
                request.amount,
                expires_at.map(|at| at.timestamp()),
                &request.idempotency_key.0,
                reason.map(|reason| reason.0).as_deref(),
            )
            .await;
        recorded(result, "grant")
    }

    /// Get an organization's credits
    ///
    /// The balance, the grants with credits left, and the transactions newest first, `limit`
    /// at a time (pass `next_before` as `before` for the next page).
    #[oai(
        path = "/api/v1/credits/:organization_id",
        method = "get",
        operation_id = "organizationCredits"
    )]
    async fn organization_credits(
        &self,
        key: BillingApiKey,
        /// The Clerk organization (`org_…`).
        organization_id: Path<String>,
        /// Only transactions older than this `transaction_id`.
        #[oai(validator(minimum(value = "1")))]
        before: Query<Option<i64>>,
        /// Transactions per page, 1 to 100 (50 when absent).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u64>>,
    ) -> StatementResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return answer(&err, "organization credits").into();
        }
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        match self
            .credits
            .statement(&organization_id.0, before.0, limit)
            .await
        {
            Ok(ledger) => StatementResponse::Statement(
                Json(statement(organization_id.0, ledger, limit)),
                NO_STORE.into(),
            ),
            Err(err) => answer(&err, "organization credits").into(),
        }
    }

    /// Get an organization's billing state
    ///
    /// What the browser's billing state says (subscriptions, entitlements, `active`,
    /// `credits_balance`), for the app's backend to check an organization's access without a
    /// user session.
    #[oai(
        path = "/api/v1/organizations/:organization_id/billing",
        method = "get",
        operation_id = "organizationBilling"
    )]
    async fn organization_billing(
        &self,
        key: BillingApiKey,
        /// The Clerk organization (`org_…`).
        organization_id: Path<String>,
    ) -> OrganizationBillingResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return answer(&err, "organization billing").into();
        }
        match organization_billing(&self.plans, &self.credits, &organization_id.0).await {
            Ok(state) => OrganizationBillingResponse::State(Json(state), NO_STORE.into()),
            Err(err) => answer(&err, "organization billing").into(),
        }
    }

    /// Get the organization's credits
    ///
    /// The caller's organization's balance, grants with credits left, and recent transactions
    /// (as `organizationCredits`), for any member; the organization is chosen as for the
    /// customer portal.
    #[oai(
        path = "/api/v1/operations/payment/credits",
        method = "get",
        operation_id = "credits",
        tag = "ApiTags::Payment"
    )]
    async fn credits(
        &self,
        session: ClerkSession,
        /// Only transactions older than this `transaction_id`.
        #[oai(validator(minimum(value = "1")))]
        before: Query<Option<i64>>,
        /// Transactions per page, 1 to 100 (50 when absent).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u64>>,
    ) -> StatementResponse {
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        match self
            .credits
            .caller_statement(session.token(), before.0, limit)
            .await
        {
            Ok((caller, ledger)) => StatementResponse::Statement(
                Json(statement(caller.organization_id, ledger, limit)),
                NO_STORE.into(),
            ),
            Err(err) => answer(&err, "credits").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use billing_sync_credits::{Settled, Settlement};

    use super::{CreditsError, answer};

    /// The refusals' outcomes are the labels the metrics table documents.
    #[test]
    fn each_refusal_is_counted_under_its_documented_outcome() {
        let settled = Settled {
            how: Settlement::Released,
            transaction: 2,
            balance_after: 0,
        };
        for (err, outcome) in [
            (CreditsError::Invalid("x".into()), "validation_error"),
            (CreditsError::Unauthorized, "unauthorized"),
            (
                CreditsError::Insufficient { balance: 1 },
                "insufficient_credits",
            ),
            (CreditsError::KeyReused, "idempotency_key_reused"),
            (CreditsError::NoSuchReservation, "reservation_not_found"),
            (CreditsError::AlreadySettled(settled), "reservation_settled"),
            (CreditsError::Failed("x".into()), "internal_error"),
            (CreditsError::NotConfigured, "internal_error"),
            (CreditsError::Unavailable("x".into()), "unavailable"),
        ] {
            assert_eq!(answer(&err, "test").outcome(), outcome, "{err:?}");
        }
    }
}
