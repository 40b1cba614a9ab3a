//! Local stand-ins for the third-party services, real HTTP servers on 127.0.0.1 speaking their
//! wire format: Clerk's JWKS endpoint and Backend API lists, and Stripe's billing portal
//! sessions, retrievals and lists.

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

pub(crate) async fn serve(route: impl poem::Endpoint + 'static) -> String {
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
    /// The `kid` its tokens carry and its JWKS entry names.
    pub kid: String,
    encoding: Arc<EncodingKey>,
    /// The JWK of the public half.
    pub jwk: Value,
    /// The public half as PEM (what `CLERK_JWT_KEY` holds).
    pub public_pem: String,
}

impl SigningKey {
    /// A new 2048-bit RSA key named `kid`.
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
    /// The JWKS URL.
    pub url: String,
    /// The issuer its URL implies, as Clerk's Frontend API origin is its tokens' `iss`.
    pub issuer: String,
    /// How many times the JWKS was fetched.
    pub fetches: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<Value>>>,
    failures: Arc<JwksFailures>,
}

/// How many of the next fetches answer 503, and whether every fetch hangs.
#[derive(Default)]
struct JwksFailures(AtomicUsize, std::sync::atomic::AtomicBool);

/// How long a hanging JWKS keeps a fetch without an answer: longer than any client waits.
const JWKS_HANG: Duration = Duration::from_secs(60);

#[handler]
async fn jwks(
    keys: Data<&Arc<Mutex<Vec<Value>>>>,
    fetches: Data<&Arc<AtomicUsize>>,
    failures: Data<&Arc<JwksFailures>>,
) -> Response {
    fetches.fetch_add(1, Ordering::SeqCst);
    if failures.0.1.load(Ordering::SeqCst) {
        tokio::time::sleep(JWKS_HANG).await;
    }
    let failing = failures
        .0
        .0
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return json_response(503, json!({"error": "unavailable"}));
    }
    json_response(200, json!({"keys": keys.lock().expect("lock").clone()}))
}

impl JwksStandIn {
    /// Serves `keys` as a JWKS on a free port.
    pub async fn start(keys: &[&SigningKey]) -> JwksStandIn {
        let fetches = Arc::new(AtomicUsize::new(0));
        let keys = Arc::new(Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let failures = Arc::new(JwksFailures::default());
        let base = serve(
            Route::new()
                .at("/.well-known/jwks.json", get(jwks))
                .data(keys.clone())
                .data(fetches.clone())
                .data(failures.clone()),
        )
        .await;
        JwksStandIn {
            url: format!("{base}/.well-known/jwks.json"),
            issuer: base.to_string(),
            fetches,
            keys,
            failures,
        }
    }

    /// The next `count` fetches answer 503.
    pub fn fail_next(&self, count: usize) {
        self.failures.0.store(count, Ordering::SeqCst);
    }

    /// From now on, every fetch hangs without an answer.
    pub fn hang(&self) {
        self.failures.1.store(true, Ordering::SeqCst);
    }

    /// Publishes another key (as Clerk does when it rotates).
    pub fn publish(&self, key: &SigningKey) {
        self.keys.lock().expect("lock").push(key.jwk.clone());
    }

    /// How many times the JWKS was fetched so far.
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
    /// `/v1/billing_portal/sessions` or `/v1/checkout/sessions`.
    pub path: String,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Stripe-Version` header.
    pub stripe_version: Option<String>,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
}

impl ReceivedRequest {
    /// The first form field `name`.
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
    /// Listable objects by resource (`customers`, `subscriptions`), newest first like Stripe.
    lists: ListState,
    /// Checkout answers already given, by `Idempotency-Key` (status, body): Stripe replays the
    /// first answer to a repeated key, errors included.
    checkout_sessions: Mutex<std::collections::HashMap<String, (u16, String)>>,
}

/// A list call a stand-in received: the resource and its query parameters.
#[derive(Clone, Debug)]
pub struct ListRequest {
    /// The listed resource (`customers`, `subscriptions`, …).
    pub resource: String,
    /// The query parameters.
    pub query: std::collections::HashMap<String, String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

impl ListRequest {
    /// The query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// What a stand-in lists, and what its list calls were asked and answered.
#[derive(Default)]
struct ListState {
    /// Objects by resource, in the order the service keeps them.
    lists: Mutex<std::collections::HashMap<String, Vec<Value>>>,
    /// Misbehave: ignore `starting_after`, answer the first page with `has_more` every time.
    never_advance: std::sync::atomic::AtomicBool,
    /// As `never_advance`, for customers' entitlement lists only.
    entitlements_never_advance: std::sync::atomic::AtomicBool,
    failures: ListFailures,
    requests: Mutex<Vec<ListRequest>>,
}

impl ListState {
    fn set_list(&self, resource: &str, objects: Vec<Value>) {
        self.lists
            .lock()
            .expect("lock")
            .insert(resource.to_owned(), objects);
    }

    fn fail_next_lists(&self, statuses: &[u16]) {
        let mut once = self.failures.once.lock().expect("lock");
        once.extend(statuses.iter().copied());
    }

    fn requests(&self) -> Vec<ListRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

/// Scripted failures of list calls: a queue of one-off statuses, then an optional status every
/// call gets once `after` calls have succeeded.
#[derive(Default)]
struct ListFailures {
    once: Mutex<VecDeque<u16>>,
    from_call: Mutex<Option<(usize, u16)>>,
    calls: AtomicUsize,
}

impl ListFailures {
    /// The status this call fails with, if any.
    fn next(&self) -> Option<u16> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(status) = self.once.lock().expect("lock").pop_front() {
            return Some(status);
        }
        match *self.from_call.lock().expect("lock") {
            Some((after, status)) if call >= after => Some(status),
            _ => None,
        }
    }
}

fn list_request(
    request: &poem::Request,
    resource: &str,
    query: std::collections::HashMap<String, String>,
) -> ListRequest {
    ListRequest {
        resource: resource.to_owned(),
        query,
        authorization: request.header("authorization").map(str::to_owned),
    }
}

fn json_response(status: u16, body: Value) -> Response {
    let mut response = Response::builder()
        .status(poem::http::StatusCode::from_u16(status).expect("status"))
        .header("request-id", "req_standin_list")
        .content_type("application/json");
    if status == 429 {
        // Clerk sends Retry-After; Stripe does not, and the client backs off on its own.
        response = response.header("retry-after", "1");
    }
    response.body(body.to_string())
}

/// Stripe's `GET /v1/customers|subscriptions`: `limit`, `starting_after`, `has_more`, and
/// canceled subscriptions only with `status=all`.
#[handler]
fn list_stripe_objects(
    request: &poem::Request,
    poem::web::Path(resource): poem::web::Path<String>,
    poem::web::Query(query): poem::web::Query<std::collections::HashMap<String, String>>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    list_stripe_page(request, &resource, &resource, query, &state)
}

/// Stripe's `GET /v1/checkout/sessions`: listed like the rest (set with `set_list`).
#[handler]
fn list_checkout_sessions(
    request: &poem::Request,
    poem::web::Query(query): poem::web::Query<std::collections::HashMap<String, String>>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    list_stripe_page(
        request,
        "checkout/sessions",
        "checkout/sessions",
        query,
        &state,
    )
}

/// Stripe's `GET /v1/checkout/sessions/{id}/line_items`: the list set with
/// `set_list("checkout/sessions/{id}/line_items", …)`, else none.
#[handler]
fn list_session_line_items(
    request: &poem::Request,
    poem::web::Path(id): poem::web::Path<String>,
    poem::web::Query(query): poem::web::Query<std::collections::HashMap<String, String>>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    let key = format!("checkout/sessions/{id}/line_items");
    state
        .lists
        .lists
        .lock()
        .expect("lock")
        .entry(key.clone())
        .or_default();
    list_stripe_page(request, "line_items", &key, query, &state)
}

/// Stripe's `GET /v1/entitlements/active_entitlements?customer=…`: the customer's list, set
/// with [`StripeStandIn::set_entitlements`]; an empty list for a customer without one.
#[handler]
fn list_active_entitlements(
    request: &poem::Request,
    poem::web::Query(query): poem::web::Query<std::collections::HashMap<String, String>>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    let Some(customer) = query.get("customer").cloned() else {
        return json_response(
            400,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_missing"}}),
        );
    };
    let key = format!("{ACTIVE_ENTITLEMENTS}/{customer}");
    state
        .lists
        .lists
        .lock()
        .expect("lock")
        .entry(key.clone())
        .or_default();
    list_stripe_page(request, ACTIVE_ENTITLEMENTS, &key, query, &state)
}

const ACTIVE_ENTITLEMENTS: &str = "entitlements/active_entitlements";

/// The list resources the stand-in knows, empty until set.
const STRIPE_LISTS: [&str; 6] = [
    "customers",
    "subscriptions",
    "products",
    "prices",
    "checkout/sessions",
    "invoices",
];

/// One page of the list stored under `key`, as Stripe answers `GET /v1/{resource}`.
fn list_stripe_page(
    request: &poem::Request,
    resource: &str,
    key: &str,
    query: std::collections::HashMap<String, String>,
    state: &StripeState,
) -> Response {
    let resource = resource.to_owned();
    state
        .lists
        .requests
        .lock()
        .expect("lock")
        .push(list_request(request, &resource, query.clone()));
    if let Some(status) = state.lists.failures.next() {
        // Stripe's own words for the refusals it makes (a key it does not accept is shown
        // masked but for its last four characters).
        let (kind, message) = match status {
            429 => (
                "rate_limit_error",
                "Too many requests made to the API too quickly",
            ),
            401 => (
                "invalid_request_error",
                "Invalid API Key provided: sk_test_****4242",
            ),
            _ => ("invalid_request_error", "The stand-in refuses this list"),
        };
        return json_response(status, json!({"error": {"type": kind, "message": message}}));
    }
    let lists = state.lists.lists.lock().expect("lock");
    let none = Vec::new();
    let all = match lists.get(key) {
        Some(all) => all,
        // An account with none of them lists none; an unknown resource is Stripe's 404.
        None if STRIPE_LISTS.contains(&key) => &none,
        None => return json_response(404, json!({"error": {"type": "invalid_request_error"}})),
    };
    let listed: Vec<&Value> = all
        .iter()
        .filter(|object| match (resource.as_str(), query.get("status")) {
            // Canceled subscriptions only with `status=all`.
            ("subscriptions", Some(status)) if status == "all" => true,
            ("subscriptions", _) => object["status"] != "canceled",
            // Sessions and invoices filtered by their status when asked.
            ("checkout/sessions" | "invoices", Some(status)) => object["status"] == *status,
            _ => true,
        })
        .collect();
    let never_advance = state.lists.never_advance.load(Ordering::SeqCst)
        || (resource == ACTIVE_ENTITLEMENTS
            && state
                .lists
                .entitlements_never_advance
                .load(Ordering::SeqCst));
    let start = match query.get("starting_after") {
        _ if never_advance => 0,
        Some(after) => match listed.iter().position(|o| o["id"] == after.as_str()) {
            Some(index) => index + 1,
            None => {
                return json_response(
                    400,
                    json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}}),
                );
            }
        },
        None => 0,
    };
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    let page: Vec<&Value> = listed.iter().skip(start).take(limit).copied().collect();
    let has_more = start + page.len() < listed.len() || never_advance;
    json_response(
        200,
        json!({"object": "list", "url": format!("/v1/{resource}"), "has_more": has_more, "data": page}),
    )
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
    /// `http://127.0.0.1:PORT`, for `STRIPE_API_BASE`.
    pub base_url: String,
    state: Arc<StripeState>,
}

/// Stripe's `POST /v1/checkout/sessions`: recorded like a portal session, scripted by the same
/// answers, and idempotent as Stripe is: a repeated `Idempotency-Key` gets the first answer
/// again, a 500 as much as a session.
#[handler]
async fn checkout_sessions(
    request: &poem::Request,
    Form(form): Form<Vec<(String, String)>>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    record(request, &form, &state);
    let key = request.header("idempotency-key").map(str::to_owned);
    let saved = key.as_ref().and_then(|key| {
        state
            .checkout_sessions
            .lock()
            .expect("lock")
            .get(key)
            .cloned()
    });
    if let Some((status, body)) = saved {
        return Response::builder()
            .status(poem::http::StatusCode::from_u16(status).expect("status"))
            .header("request-id", "req_standin_replayed")
            .header("idempotent-replayed", "true")
            .content_type("application/json")
            .body(body);
    }
    let (status, request_id, body) = match next_answer(&state).await {
        Ok((n, request_id)) => {
            let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let id = format!("cs_test_standin{n:04}");
            let session = json!({
                "id": id, "object": "checkout.session", "mode": field("mode"),
                "customer": field("customer"),
                "client_reference_id": field("client_reference_id"),
                "success_url": field("success_url"), "cancel_url": field("cancel_url"),
                "livemode": false, "status": "open",
                "url": format!("https://checkout.stripe.com/c/pay/{id}"),
            });
            (200, request_id, session.to_string())
        }
        Err(failure) if failure.status().as_u16() == 504 => return failure,
        Err(failure) => {
            let status = failure.status().as_u16();
            let request_id = failure
                .headers()
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = failure.into_body().into_string().await.expect("body");
            (status, request_id, body)
        }
    };
    // Stripe saves the first answer to a key, an error as much as a session, and replays it.
    if let Some(key) = key {
        state
            .checkout_sessions
            .lock()
            .expect("lock")
            .insert(key, (status, body.clone()));
    }
    Response::builder()
        .status(poem::http::StatusCode::from_u16(status).expect("status"))
        .header("request-id", request_id)
        .content_type("application/json")
        .body(body)
}

fn record(request: &poem::Request, form: &[(String, String)], state: &StripeState) {
    let header = |name: &str| request.header(name).map(str::to_owned);
    state.received.lock().expect("lock").push(ReceivedRequest {
        path: request.uri().path().to_owned(),
        form: form.to_vec(),
        authorization: header("authorization"),
        stripe_version: header("stripe-version"),
        idempotency_key: header("idempotency-key"),
        content_type: header("content-type"),
    });
}

/// The next scripted answer: `Ok((session number, request id))` for a session, or the
/// failure to answer with.
async fn next_answer(state: &StripeState) -> Result<(usize, String), Response> {
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
            Err(Response::builder()
                .status(poem::http::StatusCode::GATEWAY_TIMEOUT)
                .finish())
        }
        StripeAnswer::Error(status) => Err(Response::builder()
            .status(poem::http::StatusCode::from_u16(status).expect("status"))
            .header("request-id", request_id)
            .content_type("application/json")
            .body(
                json!({"error": {"type": "api_error", "message": "stand-in failure"}}).to_string(),
            )),
        StripeAnswer::Session => Ok((n, request_id)),
    }
}

#[handler]
async fn portal_sessions(
    request: &poem::Request,
    Form(form): Form<Vec<(String, String)>>,
    state: Data<&Arc<StripeState>>,
) -> Response {
    record(request, &form, &state);
    let (n, request_id) = match next_answer(&state).await {
        Ok(numbers) => numbers,
        Err(failure) => return failure,
    };
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

impl StripeStandIn {
    /// Serves on a free port, answering each request with the next of `script`.
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
                .at(
                    "/v1/checkout/sessions",
                    post(checkout_sessions).get(list_checkout_sessions),
                )
                .at(
                    "/v1/checkout/sessions/:id/line_items",
                    get(list_session_line_items),
                )
                .at(
                    "/v1/entitlements/active_entitlements",
                    get(list_active_entitlements),
                )
                .at("/v1/:kind/:id", get(retrieve_object))
                .at("/v1/:resource", get(list_stripe_objects))
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

    /// Makes `objects` (newest first) what `GET /v1/{resource}` lists.
    pub fn set_list(&self, resource: &str, objects: Vec<Value>) {
        self.state.lists.set_list(resource, objects);
    }

    /// The next list calls fail with these statuses, one each.
    pub fn fail_next_lists(&self, statuses: &[u16]) {
        self.state.lists.fail_next_lists(statuses);
    }

    /// Makes `entitlements` (active entitlement objects) what
    /// `GET /v1/entitlements/active_entitlements?customer={customer}` lists.
    pub fn set_entitlements(&self, customer: &str, entitlements: Vec<Value>) {
        self.state
            .lists
            .set_list(&format!("{ACTIVE_ENTITLEMENTS}/{customer}"), entitlements);
    }

    /// From now on, answer every list call with its first page and `has_more: true`, whatever
    /// `starting_after` says (a cursor that never advances).
    pub fn never_advance(&self) {
        self.state.lists.never_advance.store(true, Ordering::SeqCst);
    }

    /// As [`StripeStandIn::never_advance`], for customers' entitlement lists only.
    pub fn never_advance_entitlements(&self) {
        self.state
            .lists
            .entitlements_never_advance
            .store(true, Ordering::SeqCst);
    }

    /// Every list call after the first `after` fails with `status` (`None`: heal).
    pub fn fail_lists_after(&self, failure: Option<(usize, u16)>) {
        let failures = &self.state.lists.failures;
        *failures.from_call.lock().expect("lock") = failure;
        failures.calls.store(0, Ordering::SeqCst);
    }

    /// The list calls received so far.
    pub fn list_requests(&self) -> Vec<ListRequest> {
        self.state.lists.requests()
    }

    /// Makes the next `count` retrievals fail with 500.
    pub fn fail_retrievals(&self, count: usize) {
        self.state.failing_retrievals.store(count, Ordering::SeqCst);
    }

    /// How many retrievals were asked for.
    pub fn retrievals(&self) -> usize {
        self.state.retrievals.load(Ordering::SeqCst)
    }

    /// The requests received so far, in order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.state.received.lock().expect("lock").clone()
    }

    /// The checkout sessions it was asked to create, in order.
    pub fn checkout_sessions(&self) -> Vec<ReceivedRequest> {
        self.received()
            .into_iter()
            .filter(|request| request.path == "/v1/checkout/sessions")
            .collect()
    }
}

#[derive(Default)]
struct ClerkState {
    secret_key: String,
    /// Objects by resource (`organizations`, `users`, `organization_memberships`).
    lists: ListState,
}

/// Clerk's Backend API lists: `limit` (1..=500) and `offset`, `order_by` `±created_at`;
/// `{data, total_count}` except `/v1/users`, which answers a bare array as Clerk's does.
#[handler]
fn list_clerk_objects(
    request: &poem::Request,
    poem::web::Path(resource): poem::web::Path<String>,
    poem::web::Query(query): poem::web::Query<std::collections::HashMap<String, String>>,
    state: Data<&Arc<ClerkState>>,
) -> Response {
    let received = list_request(request, &resource, query.clone());
    let authorized =
        received.authorization.as_deref() == Some(format!("Bearer {}", state.secret_key).as_str());
    state.lists.requests.lock().expect("lock").push(received);
    let clerk_error = |status: u16, code: &str| {
        json_response(
            status,
            json!({"errors": [{"code": code, "message": code}],
                                     "clerk_trace_id": "trace_standin"}),
        )
    };
    if !authorized {
        return clerk_error(401, "authentication_invalid");
    }
    if let Some(status) = state.lists.failures.next() {
        return clerk_error(
            status,
            if status == 429 {
                "too_many_requests"
            } else {
                "internal_clerk_error"
            },
        );
    }
    let limit: usize = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(limit)) if (1..=500).contains(&limit) => limit,
        Some(_) => return clerk_error(422, "form_param_value_invalid"),
    };
    let offset: usize = query
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let lists = state.lists.lists.lock().expect("lock");
    let Some(all) = lists.get(&resource) else {
        return clerk_error(404, "resource_not_found");
    };
    let mut sorted = all.clone();
    sorted.sort_by_key(|object| object["created_at"].as_i64().unwrap_or(0));
    if query.get("order_by").map(String::as_str) != Some("+created_at") {
        sorted.reverse();
    }
    let page: Vec<Value> = sorted.into_iter().skip(offset).take(limit).collect();
    if resource == "users" {
        json_response(200, Value::Array(page))
    } else {
        json_response(200, json!({"data": page, "total_count": all.len()}))
    }
}

/// Clerk's Backend API (`/v1/organizations`, `/v1/users`, `/v1/organization_memberships`).
pub struct ClerkApiStandIn {
    /// `http://127.0.0.1:PORT`, for `CLERK_API_BASE`.
    pub base_url: String,
    state: Arc<ClerkState>,
}

impl ClerkApiStandIn {
    /// A stand-in that accepts `Authorization: Bearer {secret_key}` only.
    pub async fn start(secret_key: &str) -> ClerkApiStandIn {
        let state = Arc::new(ClerkState {
            secret_key: secret_key.to_owned(),
            ..ClerkState::default()
        });
        let base_url = serve(
            Route::new()
                .at("/v1/:resource", get(list_clerk_objects))
                .data(state.clone()),
        )
        .await;
        ClerkApiStandIn { base_url, state }
    }

    /// Makes `objects` what `GET /v1/{resource}` lists.
    pub fn set_list(&self, resource: &str, objects: Vec<Value>) {
        self.state.lists.set_list(resource, objects);
    }

    /// The next list calls fail with these statuses, one each.
    pub fn fail_next_lists(&self, statuses: &[u16]) {
        self.state.lists.fail_next_lists(statuses);
    }

    /// The list calls received so far.
    pub fn requests(&self) -> Vec<ListRequest> {
        self.state.lists.requests()
    }
}
