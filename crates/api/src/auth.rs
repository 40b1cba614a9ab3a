//! Clerk session tokens: RS256 JWTs verified with keys from Clerk's JWKS (fetched on first use,
//! one fetch at a time, cached, refetched for an unknown `kid` at most once per 30 s, backing
//! off after a failure) or from a configured PEM.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

/// How often an unknown `kid` may trigger a JWKS refetch.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// Why a token was not accepted. Every variant is a 401 for the caller; the detail is logged.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT, wrong algorithm, bad signature, expired, not yet valid, wrong issuer.
    #[error("invalid session token: {0}")]
    Invalid(String),
    /// `azp` is not one of the authorized parties.
    #[error("session token's azp is not an authorized party")]
    UnauthorizedParty,
    /// No key with the token's `kid`, even after a refetch.
    #[error("no signing key with the token's kid")]
    UnknownKey,
    /// The JWKS could not be fetched.
    #[error("the JWKS could not be fetched: {0}")]
    KeysUnavailable(String),
}

/// The claims of a Clerk session token we use.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionClaims {
    /// The user id.
    pub sub: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// The authorized party (the origin that requested the token).
    #[serde(default)]
    pub azp: Option<String>,
    /// Session token v1: the active organization.
    #[serde(default)]
    pub org_id: Option<String>,
    /// Session token v1: the user's role in the active organization, e.g. `org:admin`.
    #[serde(default)]
    pub org_role: Option<String>,
    /// Session token v2: `o.id` is the active organization.
    #[serde(default)]
    pub o: Option<OrganizationClaim>,
}

/// Session token v2's organization claim.
#[derive(Debug, Clone, Deserialize)]
pub struct OrganizationClaim {
    /// The active organization.
    pub id: Option<String>,
    /// The user's role in it, written without the `org:` prefix (`admin`).
    #[serde(default)]
    pub rol: Option<String>,
}

impl SessionClaims {
    /// The active organization of the session, from v2's `o.id` or v1's `org_id`.
    pub fn organization_id(&self) -> Option<&str> {
        self.o
            .as_ref()
            .and_then(|o| o.id.as_deref())
            .or(self.org_id.as_deref())
            .filter(|id| !id.is_empty())
    }

    /// The user's role in the active organization, as [`organization_role`] writes it, from
    /// v2's `o.rol` or v1's `org_role`.
    pub fn organization_role(&self) -> Option<String> {
        self.o
            .as_ref()
            .and_then(|o| o.rol.as_deref())
            .or(self.org_role.as_deref())
            .and_then(organization_role)
    }
}

/// A Clerk organization role in one spelling, `org:<key>`: session token v2 writes the key
/// without the `org:` prefix, v1 and the membership objects with it, and `BILLING_ROLES` may
/// name it either way. `None` for an empty role.
pub fn organization_role(role: &str) -> Option<String> {
    let role = role.trim();
    if role.is_empty() {
        None
    } else if role.contains(':') {
        Some(role.to_owned())
    } else {
        Some(format!("org:{role}"))
    }
}

/// Where verification keys come from.
pub enum KeySource {
    /// A PEM public key (`CLERK_JWT_KEY`): no network at all.
    Pem(Box<DecodingKey>),
    /// Clerk's JWKS endpoint (`CLERK_JWKS_URL`).
    Jwks(Box<JwksCache>),
}

/// Keys fetched from a JWKS URL, by `kid`.
///
/// Fetches are single-flight: while one is in flight, requests needing a key wait for its
/// outcome and share it (a success's keys, or its failure), rather than each fetching in turn
/// behind the lock. After a failure, requests for a key not cached are refused at once for a
/// back-off that doubles with each failure ([`FIRST_BACKOFF`] to [`REFETCH_INTERVAL`]), so
/// tokens with random `kid`s cannot make a fetch each while Clerk is failing; keys already
/// cached keep verifying throughout.
pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// The outcome of the fetches so far; held across a fetch so that one runs at a time.
    fetching: Mutex<FetchHistory>,
    /// How many fetches have finished, read before waiting for `fetching`: a change means a
    /// fetch finished while this request waited, and its outcome is this request's too.
    finished: AtomicU64,
}

/// The first back-off after a failed fetch; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Default)]
struct FetchHistory {
    /// When the keys were last fetched successfully.
    succeeded_at: Option<Instant>,
    /// The last fetch's failure, when it failed: when, why, and the back-off it started.
    failure: Option<(Instant, String, Duration)>,
}

impl JwksCache {
    /// A cache for `url`, fetched lazily with `client` (whose timeout bounds how long a
    /// request can wait for a fetch).
    pub fn new(url: String, client: reqwest::Client) -> Self {
        JwksCache {
            url,
            client,
            keys: RwLock::new(HashMap::new()),
            fetching: Mutex::new(FetchHistory::default()),
            finished: AtomicU64::new(0),
        }
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        let finished_before = self.finished.load(Ordering::Acquire);
        let mut history = self.fetching.lock().await;
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        let fetched_while_waiting = self.finished.load(Ordering::Acquire) != finished_before;
        match &history.failure {
            Some((_, reason, _)) if fetched_while_waiting => {
                return Err(AuthError::KeysUnavailable(reason.clone()));
            }
            Some((at, reason, backoff)) if at.elapsed() < *backoff => {
                return Err(AuthError::KeysUnavailable(reason.clone()));
            }
            _ if fetched_while_waiting => return Err(AuthError::UnknownKey),
            _ => {}
        }
        if history
            .succeeded_at
            .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL)
        {
            return Err(AuthError::UnknownKey);
        }
        let fetched = self.fetch().await;
        self.finished.fetch_add(1, Ordering::Release);
        match fetched {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "fetched Clerk's JWKS");
                history.succeeded_at = Some(Instant::now());
                history.failure = None;
                let found = keys.get(kid).cloned();
                *self.keys.write().await = keys;
                found.ok_or(AuthError::UnknownKey)
            }
            Err(reason) => {
                let backoff = match &history.failure {
                    Some((_, _, previous)) => (*previous * 2).min(REFETCH_INTERVAL),
                    None => FIRST_BACKOFF,
                };
                tracing::warn!(%reason, ?backoff, "fetching Clerk's JWKS failed; keys not cached are refused until the back-off ends");
                history.failure = Some((Instant::now(), reason.clone(), backoff));
                Err(AuthError::KeysUnavailable(reason))
            }
        }
    }

    /// The keys the JWKS URL serves, by `kid`.
    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let set: JwkSet = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| err.without_url().to_string())?
            .json()
            .await
            .map_err(|err| err.without_url().to_string())?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect())
    }
}

/// Verifies Clerk session tokens.
pub struct SessionVerifier {
    keys: KeySource,
    validation: Validation,
    authorized_parties: Vec<String>,
}

impl SessionVerifier {
    /// A verifier with `keys`, checking `iss` when `issuer` is set and `azp` when
    /// `authorized_parties` is not empty.
    pub fn new(keys: KeySource, issuer: Option<String>, authorized_parties: Vec<String>) -> Self {
        // RS256 only: `none`, HS* (including HS256 "signed" with the public key) and every other
        // algorithm are refused before any key is used.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        if let Some(issuer) = issuer {
            // `set_issuer` alone checks `iss` only when a token carries one: required too.
            validation.set_required_spec_claims(&["exp", "sub", "iat", "iss"]);
            validation.set_issuer(&[issuer]);
        } else {
            validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        }
        SessionVerifier {
            keys,
            validation,
            authorized_parties,
        }
    }

    /// The claims of `token` when it is valid now.
    pub async fn verify(&self, token: &str) -> Result<SessionClaims, AuthError> {
        let header = decode_header(token).map_err(|err| AuthError::Invalid(err.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not RS256",
                header.alg
            )));
        }
        let key = match &self.keys {
            KeySource::Pem(key) => (**key).clone(),
            KeySource::Jwks(cache) => {
                let kid = header
                    .kid
                    .ok_or_else(|| AuthError::Invalid("no kid in the header".into()))?;
                cache.key(&kid).await?
            }
        };
        let claims = decode::<SessionClaims>(token, &key, &self.validation)
            .map_err(|err| AuthError::Invalid(err.to_string()))?
            .claims;
        if !self.authorized_parties.is_empty()
            && !claims
                .azp
                .as_ref()
                .is_some_and(|azp| self.authorized_parties.contains(azp))
        {
            return Err(AuthError::UnauthorizedParty);
        }
        Ok(claims)
    }
}
