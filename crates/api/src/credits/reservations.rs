//! Reservations on the wire: the app's backend holds credits for work under way
//! (`/api/v1/credits/reserve`), then charges what the work used (`…/capture`) or returns it all
//! (`…/release`); an unsettled reservation returns by itself when its time to live ends. The
//! rules are `billing_sync_credits::decide`'s; exactly once like a consumption.

use std::sync::Arc;

use billing_sync_credits::Settlement;
use chrono::{DateTime, Utc};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::api::{
    Answer, CreditsErrorBody, RETRY_AFTER_SECONDS, counted, optional, time, without_balance,
};
use super::text::Text;
use super::{Credits, CreditsError, Held, ReservationState};
use crate::api_key::BillingApiKey;
use crate::http::ApiTags;

/// Hold an organization's credits for work under way.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ReserveRequest {
    /// The Clerk organization (`org_…`).
    #[oai(validator(min_length = 1, max_length = 255))]
    pub organization_id: Text,
    /// Credits to hold: a whole number from 1 to 10^12.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000000")))]
    pub amount: i64,
    /// How long the work may take, in seconds (1 to 604800, a week): an unsettled reservation
    /// is released then.
    #[oai(validator(minimum(value = "1"), maximum(value = "604800")))]
    pub ttl_seconds: i64,
    /// As for `consume`: the same key again gets the same reservation.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub idempotency_key: Text,
    /// Why, kept in the hold's transaction (up to 1,000 characters); leave it out rather than
    /// null.
    #[oai(validator(max_length = 1000))]
    pub reason: MaybeUndefined<Text>,
}

/// Charge what the work used of a reservation.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CaptureRequest {
    /// The Clerk organization (`org_…`) the reservation is of.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub organization_id: Text,
    /// What `reserve` answered.
    #[oai(validator(minimum(value = "1")))]
    pub reservation_id: i64,
    /// Credits to charge: 0 up to what the reservation holds; the rest returns to the balance.
    #[oai(validator(minimum(value = "0"), maximum(value = "1000000000000")))]
    pub amount: i64,
}

/// Return a reservation's credits.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The Clerk organization (`org_…`) the reservation is of.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub organization_id: Text,
    /// What `reserve` answered.
    #[oai(validator(minimum(value = "1")))]
    pub reservation_id: i64,
}

/// A reservation as the request left it.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ReservationBody {
    /// Its id in the organization (the number of its `hold` transaction).
    pub reservation_id: i64,
    /// `held`, `captured`, `released` or `expired` (its time to live ended first).
    pub status: String,
    /// While `held`: when it is released by itself.
    pub expires_at: Option<DateTime<Utc>>,
    /// When `captured`: the credits charged.
    pub captured: Option<i64>,
    /// The transaction that made it (`held`) or settled it.
    pub transaction_id: i64,
    /// The balance (what may be spent; held credits are not in it) after that transaction.
    pub balance: i64,
}

impl From<ReservationState> for ReservationBody {
    fn from(state: ReservationState) -> Self {
        let (status, expires_at, captured, transaction_id) = match state.state {
            Held::Until(at) => ("held", Some(time(at)), None, state.reservation),
            Held::Settled(settled) => (
                settled.how.as_str(),
                None,
                matches!(settled.how, Settlement::Captured(_)).then(|| settled.how.captured()),
                settled.transaction,
            ),
        };
        ReservationBody {
            reservation_id: state.reservation,
            status: status.to_owned(),
            expires_at,
            captured,
            transaction_id,
            balance: state.balance,
        }
    }
}

/// The answers of `reserve`, `capture` and `release`.
#[derive(ApiResponse)]
pub enum ReservationResponse {
    /// Held, captured or released (now, or by the same request before).
    #[oai(status = 200)]
    Reservation(Json<ReservationBody>),
    /// `VALIDATION_ERROR`: a field is missing or out of bounds, or a capture is more than the
    /// hold; nothing changed.
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
    /// `RESERVATION_NOT_FOUND`: the organization has no reservation with that id.
    #[oai(status = 404)]
    NotFound(Json<CreditsErrorBody>),
    /// `INSUFFICIENT_CREDITS` (reserve: with the balance), `IDEMPOTENCY_KEY_REUSED` (reserve)
    /// or `RESERVATION_SETTLED` (settled another way before: captured otherwise, released,
    /// or expired); nothing changed.
    #[oai(status = 409)]
    Conflict(Json<CreditsErrorBody>),
    /// `INTERNAL_ERROR`: not configured, or the database refused.
    #[oai(status = 500)]
    Internal(Json<CreditsErrorBody>),
    /// `UNAVAILABLE`: the database is unavailable; nothing was recorded. Retry the same
    /// request.
    #[oai(status = 503)]
    Unavailable(
        Json<CreditsErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        String,
    ),
}

impl From<Answer> for ReservationResponse {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::BadRequest(body) => Self::BadRequest(without_balance(body)),
            Answer::Unauthorized(body) => {
                Self::Unauthorized(without_balance(body), "Bearer".into())
            }
            Answer::NotFound(body) => Self::NotFound(without_balance(body)),
            Answer::Conflict(body) => Self::Conflict(body),
            Answer::Internal(body) => Self::Internal(without_balance(body)),
            Answer::Unavailable(body) => {
                Self::Unavailable(without_balance(body), RETRY_AFTER_SECONDS.into())
            }
        }
    }
}

/// The response to `result`, counted in `billing_sync_credits_requests_total` by its outcome.
fn respond(
    result: Result<ReservationState, CreditsError>,
    operation: &'static str,
) -> ReservationResponse {
    counted(result, operation, |state| {
        ReservationResponse::Reservation(Json(state.into()))
    })
}

/// The reservation operations.
pub struct ReservationsApi {
    credits: Arc<Credits>,
}

impl ReservationsApi {
    /// The operations backed by `credits`.
    pub fn new(credits: Arc<Credits>) -> Self {
        ReservationsApi { credits }
    }
}

#[OpenApi(tag = "ApiTags::Credits")]
impl ReservationsApi {
    /// Reserve credits
    ///
    /// Holds `amount` of the organization's credits for work under way: no consumption or
    /// other reservation can spend them, and the balance answered no longer counts them. Then
    /// `capture` what the work used, or `release` it all; a reservation neither captured nor
    /// released within `ttl_seconds` is released by itself. Held credits do not expire while
    /// held. Exactly once per `idempotency_key`, as for `consume` (the same key gets the same
    /// reservation); refused with `INSUFFICIENT_CREDITS` when the balance is short.
    #[oai(
        path = "/api/v1/credits/reserve",
        method = "post",
        operation_id = "reserveCredits"
    )]
    async fn reserve(
        &self,
        key: BillingApiKey,
        request: Json<ReserveRequest>,
    ) -> ReservationResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return respond(Err(err), "reserve");
        }
        let request = request.0;
        let reason = match optional("reason", request.reason) {
            Ok(reason) => reason,
            Err(err) => return respond(Err(err), "reserve"),
        };
        let result = self
            .credits
            .reserve(
                &request.organization_id.0,
                request.amount,
                request.ttl_seconds,
                &request.idempotency_key.0,
                reason.map(|reason| reason.0).as_deref(),
            )
            .await;
        respond(result, "reserve")
    }

    /// Capture a reservation
    ///
    /// Charges `amount` (0 up to what it holds) of a held reservation and returns the rest to
    /// the balance, settling it. The same capture again answers the same; another amount, or
    /// a capture after it was released or expired, is refused with `RESERVATION_SETTLED`.
    #[oai(
        path = "/api/v1/credits/capture",
        method = "post",
        operation_id = "captureCredits"
    )]
    async fn capture(
        &self,
        key: BillingApiKey,
        request: Json<CaptureRequest>,
    ) -> ReservationResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return respond(Err(err), "capture");
        }
        let request = request.0;
        let result = self
            .credits
            .capture(
                &request.organization_id.0,
                request.reservation_id,
                request.amount,
            )
            .await;
        respond(result, "capture")
    }

    /// Release a reservation
    ///
    /// Returns all of a held reservation to the balance, settling it. Releasing it again, or
    /// after its time to live ended, answers how it ended (`released` or `expired`); after a
    /// capture it is refused with `RESERVATION_SETTLED`.
    #[oai(
        path = "/api/v1/credits/release",
        method = "post",
        operation_id = "releaseCredits"
    )]
    async fn release(
        &self,
        key: BillingApiKey,
        request: Json<ReleaseRequest>,
    ) -> ReservationResponse {
        if let Err(err) = self.credits.authenticate(Some(key.token())) {
            return respond(Err(err), "release");
        }
        let request = request.0;
        let result = self
            .credits
            .release(&request.organization_id.0, request.reservation_id)
            .await;
        respond(result, "release")
    }
}
