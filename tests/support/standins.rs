//! Local stand-ins for the third-party services, real HTTP servers on 127.0.0.1 speaking their
//! wire format: Clerk's JWKS endpoint and Stripe's billing portal sessions endpoint.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::listener::TcpAcceptor;
use poem::web::{Data, Form};
use poem::{EndpointExt, Response, Route, Server, get, handler, post};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

async fn serve(route: impl poem::Endpoint + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TcpAcceptor::from_tokio(listener).expect("acceptor");
    tokio::spawn(Server::new_with_acceptor(acceptor).run(route));
    format!("http://{addr}")
}

/// An RSA signing key of the kind Clerk uses for session tokens.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    encoding: Arc<EncodingKey>,
    /// The JWK of the public half.
    pub jwk: Value,
    /// The public half as PEM (what `CLERK_JWT_KEY` holds).
    pub public_pem: String,
}

impl SigningKey {
    pub fn generate(kid: &str) -> SigningKey {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
        let public = private.to_public_key();
        let private_pem = private
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("PEM")
            .to_string();
        let public_pem = public
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .expect("PEM");
        SigningKey {
            kid: kid.to_owned(),
            encoding: Arc::new(EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("key")),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }),
            public_pem,
        }
    }

    /// A token with `claims`, RS256, this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// Clerk's `/.well-known/jwks.json`, counting fetches.
pub struct JwksStandIn {
    pub url: String,
    pub fetches: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<Value>>>,
}

#[handler]
fn jwks(
    keys: Data<&Arc<Mutex<Vec<Value>>>>,
    fetches: Data<&Arc<AtomicUsize>>,
) -> poem::web::Json<Value> {
    fetches.fetch_add(1, Ordering::SeqCst);
    poem::web::Json(json!({"keys": keys.lock().expect("lock").clone()}))
}

impl JwksStandIn {
    pub async fn start(keys: &[&SigningKey]) -> JwksStandIn {
        let fetches = Arc::new(AtomicUsize::new(0));
        let keys = Arc::new(Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let base = serve(
            Route::new()
                .at("/.well-known/jwks.json", get(jwks))
                .data(keys.clone())
                .data(fetches.clone()),
        )
        .await;
        JwksStandIn {
            url: format!("{base}/.well-known/jwks.json"),
            fetches,
            keys,
        }
    }

    /// Publishes another key (as Clerk does when it rotates).
    pub fn publish(&self, key: &SigningKey) {
        self.keys.lock().expect("lock").push(key.jwk.clone());
    }

    pub fn fetch_count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// One scripted answer of the Stripe stand-in.
#[derive(Clone, Debug)]
pub enum StripeAnswer {
    /// A portal session.
    Session,
    /// A Stripe-style error with this status.
    Error(u16),
    /// No answer for this long.
    Hang(Duration),
}

/// What the Stripe stand-in received.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub form: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub stripe_version: Option<String>,
    pub idempotency_key: Option<String>,
    pub content_type: Option<String>,
}

impl ReceivedRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct StripeState {
    script: Mutex<VecDeque<StripeAnswer>>,
    received: Mutex<Vec<ReceivedRequest>>,
    sessions: AtomicUsize,
    /// Current objects by path (`customers/cus_…`), for retrievals.
    objects: Mutex<std::collections::HashMap<String, Value>>,
    /// How many of the next retrievals fail with 500.
    failing_retrievals: AtomicUsize,
    retrievals: AtomicUsize,
}

#[handler]
fn retrieve_object(
    poem::web::Path((kind, id)): poem::web::Path<(String, String)>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    state.retrievals.fetch_add(1, Ordering::SeqCst);
    let failing = state.failing_retrievals.load(Ordering::SeqCst);
    if failing > 0 {
        state
            .failing_retrievals
            .store(failing - 1, Ordering::SeqCst);
        return Response::builder()
            .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
            .header("request-id", "req_retrieve_failed")
            .content_type("application/json")
            .body(json!({"error": {"type": "api_error"}}).to_string());
    }
    match state
        .objects
        .lock()
        .expect("lock")
        .get(&format!("{kind}/{id}"))
    {
        Some(object) => Response::builder()
            .header("request-id", "req_retrieve")
            .content_type("application/json")
            .body(object.to_string()),
        None => Response::builder()
            .status(poem::http::StatusCode::NOT_FOUND)
            .content_type("application/json")
            .body(
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}})
                    .to_string(),
            ),
    }
}

/// Stripe's `POST /v1/billing_portal/sessions`: form body, bearer key, JSON session object like
/// Stripe's own fixture, Stripe-style error bodies with a `request-id` header.
pub struct StripeStandIn {
    pub base_url: String,
    state: Arc<StripeState>,
}

#[handler]
async fn portal_sessions(
    request: &poem::Request,
    Form(form): Form<Vec<(String, String)>>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    let header = |name: &str| request.header(name).map(str::to_owned);
    state.received.lock().expect("lock").push(ReceivedRequest {
        form: form.clone(),
        authorization: header("authorization"),
        stripe_version: header("stripe-version"),
        idempotency_key: header("idempotency-key"),
        content_type: header("content-type"),
    });
    let answer = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(StripeAnswer::Session);
    let n = state.sessions.fetch_add(1, Ordering::SeqCst);
    let request_id = format!("req_standin{n:04}");
    match answer {
        StripeAnswer::Hang(duration) => {
            tokio::time::sleep(duration).await;
            Response::builder()
                .status(poem::http::StatusCode::GATEWAY_TIMEOUT)
                .finish()
        }
        StripeAnswer::Error(status) => Response::builder()
            .status(poem::http::StatusCode::from_u16(status).expect("status"))
            .header("request-id", request_id)
            .content_type("application/json")
            .body(
                json!({"error": {"type": "api_error", "message": "stand-in failure"}}).to_string(),
            ),
        StripeAnswer::Session => {
            let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let body = json!({
                "id": format!("bps_standin{n:04}"), "object": "billing_portal.session",
                "configuration": field("configuration").unwrap_or_else(|| "bpc_default".into()),
                "created": 1_700_000_000, "customer": field("customer"), "livemode": false,
                "locale": null, "on_behalf_of": null, "return_url": field("return_url"),
                "url": format!("https://billing.stripe.com/p/session/test_standin{n:04}"),
            });
            Response::builder()
                .header("request-id", request_id)
                .content_type("application/json")
                .body(body.to_string())
        }
    }
}

impl StripeStandIn {
    pub async fn start(script: &[StripeAnswer]) -> StripeStandIn {
        let state = Arc::new(StripeState::default());
        state
            .script
            .lock()
            .expect("lock")
            .extend(script.iter().cloned());
        let base_url = serve(
            Route::new()
                .at("/v1/billing_portal/sessions", post(portal_sessions))
                .at("/v1/:kind/:id", get(retrieve_object))
                .data(state.clone()),
        )
        .await;
        StripeStandIn { base_url, state }
    }

    /// Makes `object` the current state Stripe returns for `path` (`customers/cus_…`).
    pub fn set_object(&self, path: &str, object: Value) {
        self.state
            .objects
            .lock()
            .expect("lock")
            .insert(path.to_owned(), object);
    }

    /// Makes the next `count` retrievals fail with 500.
    pub fn fail_retrievals(&self, count: usize) {
        self.state.failing_retrievals.store(count, Ordering::SeqCst);
    }

    /// How many retrievals were asked for.
    pub fn retrievals(&self) -> usize {
        self.state.retrievals.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.state.received.lock().expect("lock").clone()
    }
}
