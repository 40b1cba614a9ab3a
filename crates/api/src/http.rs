//! What the operations share on the wire: the Clerk session security scheme, the error body,
//! how a refused caller is answered, and content negotiation.

pub use billing_sync_error_body::{ErrorBody, ErrorCode};
use billing_sync_store::billing::Revocation;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::payload::Json;
use poem_openapi::{Object, SecurityScheme, Tags};

use crate::access::AccessError;
use crate::auth::AuthError;
use crate::request_fields::RequestFields;

/// The tag of the payment operations.
#[derive(Tags)]
pub(crate) enum ApiTags {
    /// Credits & Payments.
    Payment,
    /// Credits: the app's backend spends and grants an organization's credits (API key).
    Credits,
}

/// A Clerk session token sent as `Authorization: Bearer <token>` (API calls).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct ClerkBearer(Bearer);

/// The Clerk session token in the `__session` cookie (a browser following a plain link).
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_in = "cookie", key_name = "__session")]
pub struct ClerkSessionCookie(ApiKey);

/// Either way of sending a Clerk session token. A request with neither is refused by the
/// framework before the handler runs; [`unauthorized`] answers it in the documented format.
#[derive(SecurityScheme)]
pub enum ClerkSession {
    /// `Authorization: Bearer`.
    Bearer(ClerkBearer),
    /// The `__session` cookie.
    Cookie(ClerkSessionCookie),
}

impl ClerkSession {
    /// Whether the token came in the cookie, which a browser attaches on its own.
    pub(crate) fn is_cookie(&self) -> bool {
        matches!(self, ClerkSession::Cookie(_))
    }

    pub(crate) fn token(&self) -> &str {
        match self {
            ClerkSession::Bearer(ClerkBearer(bearer)) => bearer.token.as_str(),
            ClerkSession::Cookie(ClerkSessionCookie(key)) => key.key.as_str(),
        }
    }
}

pub(crate) const UNAUTHORIZED_MESSAGE: &str = "Authentication required: send a valid Clerk \
     session token as `Authorization: Bearer <token>` or in the `__session` cookie.";

/// The portal URL, for callers that asked for JSON.
#[derive(Debug, Object)]
pub struct PortalUrl {
    /// The Stripe Billing Portal session URL (absolute, https). Valid for a limited time.
    pub url: String,
}

/// The checkout URL, for callers that asked for JSON.
#[derive(Debug, Object)]
pub struct CheckoutUrl {
    /// The Stripe Checkout session URL (absolute, https). Valid for 24 hours.
    pub url: String,
}

/// `Cache-Control` of every answer about one caller's session or billing.
pub(crate) const NO_STORE: &str = "no-store";

pub(crate) fn body(code: ErrorCode, message: &str) -> Json<ErrorBody> {
    Json(ErrorBody::new(code, message))
}

/// How a refused caller is answered, whatever the operation.
pub(crate) enum Refusal {
    /// 400 `VALIDATION_ERROR`.
    BadRequest(Json<ErrorBody>),
    /// 401 `UNAUTHORIZED`, with `WWW-Authenticate: Bearer`.
    Unauthorized(Json<ErrorBody>),
    /// 403 `FORBIDDEN`.
    Forbidden(Json<ErrorBody>),
    /// 500 `INTERNAL_ERROR`.
    Internal(Json<ErrorBody>),
}

/// The answer to a caller `Access` refused. The caller gets a helpful message; the details
/// (never a token or key) go to the log, under `operation`.
pub(crate) fn refusal(err: &AccessError, operation: &'static str) -> Refusal {
    match err {
        AccessError::Unauthorized(AuthError::KeysUnavailable(_)) => {
            tracing::error!(error = %err, operation, "cannot verify tokens");
            Refusal::Internal(body(
                ErrorCode::InternalError,
                "Authentication is temporarily unavailable. Please try again.",
            ))
        }
        AccessError::Unauthorized(reason) => {
            tracing::info!(reason = %reason, operation, "unauthenticated");
            Refusal::Unauthorized(body(ErrorCode::Unauthorized, UNAUTHORIZED_MESSAGE))
        }
        AccessError::NoOrganization => Refusal::BadRequest(body(
            ErrorCode::ValidationError,
            "The user is not associated with an organization.",
        )),
        AccessError::SeveralOrganizations => Refusal::BadRequest(body(
            ErrorCode::ValidationError,
            "The user belongs to several organizations: select an active organization and try again.",
        )),
        AccessError::Revoked(revocation) => {
            tracing::info!(?revocation, operation, "access revoked by synced state");
            let message = match revocation {
                Revocation::MembershipDeleted => {
                    "The user is no longer a member of this organization."
                }
                Revocation::OrganizationDeleted => "The organization has been deleted.",
                Revocation::UserDeleted => "The user has been deleted.",
            };
            Refusal::BadRequest(body(ErrorCode::ValidationError, message))
        }
        AccessError::Forbidden => {
            tracing::info!(
                operation,
                "refused: the member's role may not manage billing"
            );
            Refusal::Forbidden(body(
                ErrorCode::Forbidden,
                "Your role in this organization does not allow managing billing. Ask an \
                 organization admin.",
            ))
        }
        AccessError::NotConfigured => {
            tracing::error!(operation, "Clerk authentication is not configured");
            not_configured()
        }
        AccessError::Store(store) => {
            tracing::error!(error = %store, operation, "reading the synced state failed");
            Refusal::Internal(body(
                ErrorCode::InternalError,
                "The billing state could not be read. Please try again.",
            ))
        }
    }
}

/// The `Retry-After` seconds of a `429` whose limit frees up in `wait`: rounded up, so that a
/// client waiting as told is not refused again, and at least 1.
pub(crate) fn retry_after(wait: std::time::Duration) -> String {
    wait.as_nanos().div_ceil(1_000_000_000).max(1).to_string()
}

pub(crate) fn not_configured() -> Refusal {
    Refusal::Internal(body(
        ErrorCode::InternalError,
        "Billing is not configured on this server.",
    ))
}

/// Whether the request prefers `application/json` to HTML (weighing `q` values), as a
/// single-page app's `fetch` with `Accept: application/json` does; a browser navigating, or
/// `*/*`, gets the redirect.
pub fn prefers_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut json = None::<f32>;
    let mut html = None::<f32>;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/json" => &mut json,
            "text/html" => &mut html,
            _ => continue,
        };
        *slot = Some(slot.map_or(quality, |q| q.max(quality)));
    }
    match (json, html) {
        (Some(json), Some(html)) => json > html,
        (Some(json), None) => json > 0.0,
        _ => false,
    }
}

/// The `Origin` of a request sent by a page of another origin than this server's own, `None`
/// for a request that names no origin or comes from a page of this very origin (Swagger UI on
/// `/docs`, an app served behind the same host). Both signs of "same origin" are set by the
/// browser and cannot be set by a page: `Sec-Fetch-Site: same-origin`, or an `Origin` whose host
/// (and port) is the request's `Host` — the scheme is left out, because a proxy terminating TLS
/// forwards the `Host` of an `https` origin over plain HTTP.
pub fn foreign_origin(request: &poem::Request) -> Option<&str> {
    let origin = request.header(poem::http::header::ORIGIN)?;
    if request.header("sec-fetch-site") == Some("same-origin") {
        return None;
    }
    let authority = origin.split_once("://").map(|(_, authority)| authority);
    let host = request.header(poem::http::header::HOST);
    match (authority, host) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => None,
        _ => Some(origin),
    }
}

/// Marks the answer to a request that carried no session token at all, which no handler saw:
/// the server's middleware counts it for the operation its path names.
#[derive(Clone, Copy, Debug)]
pub struct TokenMissing;

/// The documented 401 for a request to `path` that carries no credentials at all
/// (poem-openapi refuses it with `AuthorizationError` before the handler runs): the backend's
/// operations ask for an API key, the others for a Clerk session.
fn unauthorized(path: &str) -> poem::Response {
    let backend = crate::api_key::BACKEND_PATH_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix));
    let message = if backend {
        crate::api_key::API_KEY_REQUIRED
    } else {
        UNAUTHORIZED_MESSAGE
    };
    let mut response = json_error(
        poem::http::StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        message,
    );
    response.headers_mut().insert(
        poem::http::header::WWW_AUTHENTICATE,
        poem::http::HeaderValue::from_static("Bearer"),
    );
    response.extensions_mut().insert(TokenMissing);
    response
}

/// `endpoint` with the framework's own refusals (no token, an unreadable body or parameter)
/// answered in the documented error format; a JSON body it refused is named field by field
/// against `fields`, the request schemas of the OpenAPI document (the bodies are bounded
/// before they get here: see `BoundedBodies`).
pub fn with_documented_errors(
    endpoint: impl poem::Endpoint + 'static,
    fields: std::sync::Arc<RequestFields>,
) -> impl poem::Endpoint + 'static {
    use poem::{Endpoint, EndpointExt};
    use poem_openapi::error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError,
    };
    endpoint
        .catch_error(|_: AuthorizationError| async {
            poem::Response::builder()
                .status(poem::http::StatusCode::UNAUTHORIZED)
                .extension(NoCredentials)
                .finish()
        })
        .catch_error(|err: ParseRequestPayloadError| async move {
            let mut response = unreadable_request(&err).await;
            response
                .extensions_mut()
                .insert(PayloadRefused(err.to_string()));
            response
        })
        .catch_error(|err: ContentTypeError| unreadable_request(err))
        .catch_error(|err: ParseParamError| unreadable_request(err))
        .around(move |endpoint, mut request| {
            let fields = fields.clone();
            async move {
                let path = request.uri().path().to_owned();
                let is_json = request
                    .content_type()
                    .is_some_and(|kind| kind.contains("json"));
                let body = if is_json {
                    let body = request.take_body().into_bytes().await?;
                    request.set_body(body.clone());
                    Some(body)
                } else {
                    None
                };
                let response = endpoint.get_response(request).await;
                if response.extensions().get::<NoCredentials>().is_some() {
                    return Ok(unauthorized(&path));
                }
                if let (Some(PayloadRefused(refusal)), Some(body)) =
                    (response.extensions().get::<PayloadRefused>(), body)
                    && let Some(wrong) = fields.explain(refusal, &body)
                {
                    return Ok(unreadable_request(format!("{wrong}.")).await);
                }
                Ok(response)
            }
        })
}

/// Marks the framework's refusal of a request body, with its message: the fields are named
/// once the body is known.
#[derive(Clone, Debug)]
struct PayloadRefused(String);

/// Marks the framework's refusal of a request without credentials, answered by [`unauthorized`]
/// once its path is known.
#[derive(Clone, Copy, Debug)]
struct NoCredentials;

/// The documented 403 for a request whose `Origin` (or preflight method or headers) the CORS
/// policy does not allow: the same error body as every other refusal, not the framework's bare
/// text.
pub async fn cors_refused(err: poem::error::CorsError) -> poem::Response {
    json_error(
        poem::http::StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        &format!("Cross-origin request refused: {err} (see CORS_ALLOWED_ORIGINS)."),
    )
}

/// The documented 400 for a request body or parameter the framework could not read (malformed
/// JSON, a missing field, an unsupported content type).
async fn unreadable_request<E: std::fmt::Display>(err: E) -> poem::Response {
    json_error(
        poem::http::StatusCode::BAD_REQUEST,
        ErrorCode::ValidationError,
        &format!("The request could not be read: {err}"),
    )
}

fn json_error(status: poem::http::StatusCode, code: ErrorCode, message: &str) -> poem::Response {
    use poem::IntoResponse;
    body(code, message).with_status(status).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{prefers_json, retry_after};

    #[test]
    fn retry_after_rounds_the_wait_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::from_millis(1_900)), "2");
        assert_eq!(retry_after(Duration::from_millis(59_001)), "60");
        assert_eq!(retry_after(Duration::from_secs(60)), "60");
        assert_eq!(retry_after(Duration::from_nanos(1)), "1");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }

    #[test]
    fn json_is_chosen_only_when_preferred_over_html() {
        assert!(prefers_json(Some("application/json")));
        assert!(prefers_json(Some("application/json, text/plain, */*")));
        assert!(prefers_json(Some("text/html;q=0.5, application/json")));
        assert!(!prefers_json(None));
        assert!(!prefers_json(Some("*/*")));
        assert!(!prefers_json(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!prefers_json(Some("text/html, application/json")));
        assert!(!prefers_json(Some("application/json;q=0")));
    }
}
