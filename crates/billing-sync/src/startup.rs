//! Building the HTTP application from the settings, and serving it until a shutdown signal.

use std::future::Future;
use std::time::Duration;

use billing_sync_store::Store;
use poem::listener::TcpAcceptor;

use crate::connection_guard::{
    ConnectionLimits, DEFAULT_HEAD_TIMEOUT, DEFAULT_MAX_HEAD_BYTES, GuardedAcceptor,
};
use std::sync::Arc;

use anyhow::Context;
use billing_sync_api::access::Access;
use billing_sync_api::auth::{JwksCache, KeySource, SessionVerifier};
use billing_sync_api::credits::Credits;
use billing_sync_api::http;
use billing_sync_api::plans::{CheckoutSettings, Plans, plans_page_url};
use billing_sync_api::portal::{Portal, PortalSettings};
use billing_sync_error_body::{ErrorBody, ErrorCode};
use billing_sync_projection::Projection;
use billing_sync_projection::stripe_signature::StripeVerifier;
use billing_sync_stripe_api::StripeClient;
use billing_sync_webhooks::Ingestor;
use poem::{Endpoint, EndpointExt, IntoEndpoint, Server};
use secrecy::SecretString;

use crate::config::{CommonArgs, ServeArgs, StripeApiArgs};
use crate::cors;

/// How long in-flight requests get to finish after a shutdown signal.
const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// The billing-sync HTTP application, ready to serve.
pub struct App {
    store: Store,
    ingestor: Arc<Ingestor>,
    portal: Arc<Portal>,
    plans: Arc<Plans>,
    credits: Arc<Credits>,
    connection_limits: ConnectionLimits,
    cors_allowed_origins: Vec<String>,
}

/// Half of how long a connection may stay silent before it is closed, unless told otherwise
/// (`REQUEST_TIMEOUT_SECS`).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once unless told otherwise (`MAX_CONNECTIONS`).
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl App {
    /// The application on `store` (migrated or not: that is the caller's choice), ingesting
    /// webhooks through `ingestor`, serving the customer portal through `portal`, the plans
    /// page through `plans` and the credit ledger through `credits`.
    pub fn build(
        store: Store,
        ingestor: Arc<Ingestor>,
        (portal, plans, credits): Operations,
    ) -> App {
        App {
            store,
            ingestor,
            portal,
            plans,
            credits,
            connection_limits: ConnectionLimits {
                idle: DEFAULT_IDLE_TIMEOUT * 2,
                write_timeout: DEFAULT_IDLE_TIMEOUT,
                head_timeout: DEFAULT_HEAD_TIMEOUT,
                max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                max_per_address: DEFAULT_MAX_CONNECTIONS / 4,
                trusted_proxies: Default::default(),
            },
            cors_allowed_origins: Vec::new(),
        }
    }

    /// Lets web apps on these exact origins call the API from the browser (CORS, with
    /// credentials so that the `__session` cookie is sent; see [`cors::allowed_origins`]);
    /// none, the default, means no CORS headers at all, so only same-origin pages can read the
    /// answers.
    pub fn cors_allowed_origins(mut self, origins: Vec<String>) -> App {
        self.cors_allowed_origins = origins;
        self
    }

    /// What one connection may cost (see [`crate::connection_guard`]): how long a silent
    /// client is waited for, how large and how slow a request head may be, how many
    /// connections may be open.
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> App {
        self.connection_limits = limits;
        self
    }

    fn routes(&self) -> impl Endpoint + 'static {
        let api = billing_sync_api::service(
            self.store.clone(),
            self.portal.clone(),
            self.plans.clone(),
            self.credits.clone(),
        );
        // The document and the docs page are served from one shared copy each: an answer
        // a client does not read costs a reference, not a megabyte and a half.
        let document = billing_sync_api::openapi_document(&api);
        let request_fields =
            Arc::new(billing_sync_api::request_fields::RequestFields::from_document(&document));
        let document = bytes::Bytes::from(document);
        let spec = poem::endpoint::make_sync(move |_| {
            poem::Response::builder()
                .content_type("application/json; charset=utf-8")
                .header(poem::http::header::CONTENT_LENGTH, document.len())
                .body(in_slices(&document))
        });
        let docs_page = bytes::Bytes::from(api.swagger_ui_html());
        let docs = api.swagger_ui().around(move |endpoint, request| {
            let page = docs_page.clone();
            async move {
                Ok(match request.uri().path() {
                    "" | "/" => poem::Response::builder()
                        .content_type("text/html; charset=utf-8")
                        .header(poem::http::header::CONTENT_LENGTH, page.len())
                        .body(in_slices(&page)),
                    _ => endpoint.get_response(request).await,
                })
            }
        });
        let metrics = MetricsEndpoint {
            handle: crate::observability::prometheus(),
            store: self.store.clone(),
        };
        // With CORS on, the CORS headers of every answer depend on the request's `Origin`: a
        // shared cache must not give one origin's answer to another.
        let vary_on_origin = !self.cors_allowed_origins.is_empty();
        let bodies = Arc::new(crate::api_bodies::BoundedBodies::new(self.credits.clone()));
        let trusted_proxies = self.connection_limits.trusted_proxies.clone();
        billing_sync_webhooks::routes(self.ingestor.clone())
            .at("/metrics", poem::get(metrics))
            .at(billing_sync_api::OPENAPI_JSON_PATH, spec)
            .nest("/docs", docs)
            .nest(
                "/",
                http::with_documented_errors(api.into_endpoint(), request_fields)
                    .with_if(
                        !self.cors_allowed_origins.is_empty(),
                        cors::Policy::new(&self.cors_allowed_origins),
                    )
                    .catch_error(http::cors_refused)
                    .around(move |endpoint, request| {
                        let bodies = bodies.clone();
                        async move { Ok(bodies.call(&endpoint, request).await) }
                    }),
            )
            .around(move |endpoint, request| async move {
                let path = request.uri().path().to_owned();
                // poem answers HEAD with the GET handler (body dropped): for the portal, which
                // creates a Stripe session, a HEAD would create one for nobody to see. The
                // reads (plans, billing state) answer HEAD as GET.
                let response = if request.method() == poem::http::Method::HEAD
                    && path == PORTAL_PATH
                {
                    // Its body in the error format below, as the router's 405s.
                    poem::IntoResponse::into_response(poem::http::StatusCode::METHOD_NOT_ALLOWED)
                } else {
                    endpoint.get_response(request).await
                };
                // A request without any token never reached the portal's handler, which counts
                // every other answer.
                if path == PORTAL_PATH
                    && response.extensions().get::<http::TokenMissing>().is_some()
                {
                    metrics::counter!("billing_sync_portal_requests_total", "outcome" => "unauthorized")
                        .increment(1);
                }
                let mut response = in_the_error_format(response);
                // RFC 9110: a 405 names the methods the resource supports.
                if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
                    response.headers_mut().insert(
                        poem::http::header::ALLOW,
                        poem::http::HeaderValue::from_static(allowed_methods(&path)),
                    );
                }
                protect(&mut response);
                if vary_on_origin {
                    vary_on(&mut response, "origin");
                }
                Ok(response)
            })
            // The client's address, where a trusted proxy names it, for the body budgets.
            .around(move |endpoint, mut request| {
                trusted_proxies.mark(&mut request);
                async move { Ok(endpoint.get_response(request).await) }
            })
            .with(crate::observability::RequestIds)
            .into_endpoint()
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish (up to a grace period) and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        // Logged as a plain host:port so that scripts and tests can read the bound port.
        let addr = listener.local_addr()?;
        let acceptor = GuardedAcceptor::new(
            TcpAcceptor::from_tokio(listener)?,
            self.connection_limits.clone(),
        );
        tracing::info!(
            addr = %addr,
            worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
            "listening"
        );
        let routes = self.routes();
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(routes.boxed(), shutdown, Some(GRACE_PERIOD))
            .await;
        tracing::info!("stopped accepting; in-flight requests finished");
        if let Err(err) = self.store.close().await {
            tracing::warn!(error = %err, "closing the database pool");
        }
        result
    }
}

/// A large shared answer as a body of slices of it: hyper asks for the next slice only when
/// its write buffer has room, so an answer waiting for a client that does not read holds a few
/// slices, not a copy of the whole.
fn in_slices(shared: &bytes::Bytes) -> poem::Body {
    const SLICE: usize = 16 * 1024;
    let shared = shared.clone();
    let slices = (0..shared.len()).step_by(SLICE).map(move |start| {
        Ok::<_, std::io::Error>(shared.slice(start..(start + SLICE).min(shared.len())))
    });
    poem::Body::from_bytes_stream(futures::stream::iter(slices))
}

/// The router's own refusals, a path no route has (404) and a method the route does not take
/// (405, the portal's `HEAD` too), which poem answers in plain text, in the documented error
/// format like every other error; other answers as they are.
fn in_the_error_format(response: poem::Response) -> poem::Response {
    use poem::http::StatusCode;
    let (code, message) = match response.status() {
        StatusCode::NOT_FOUND => (
            ErrorCode::NotFound,
            "No route has this path; the OpenAPI document lists them.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "This method is not allowed here; see the Allow header.",
        ),
        _ => return response,
    };
    let is_json = response
        .content_type()
        .is_some_and(|content_type| content_type.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(poem::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        poem::http::header::CONTENT_TYPE,
        poem::http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    poem::Response::from_parts(parts, ErrorBody::new(code, message).to_json_bytes().into())
}

/// Headers every answer gets: no content sniffing, and no caching of an error (an error about
/// one user's session must never be served to another from a shared cache).
fn protect(response: &mut poem::Response) {
    use poem::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if response.status().is_client_error() || response.status().is_server_error() {
        response
            .headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
}

/// Adds `field` to the response's `Vary` unless a `Vary` already names it (or `*`).
fn vary_on(response: &mut poem::Response, field: &'static str) {
    use poem::http::{HeaderValue, header};
    let named = response
        .headers()
        .get_all(header::VARY)
        .iter()
        .any(|value| {
            value.to_str().is_ok_and(|text| {
                text.split(',')
                    .map(str::trim)
                    .any(|name| name == "*" || name.eq_ignore_ascii_case(field))
            })
        });
    if !named {
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static(field));
    }
}

/// The methods a path of ours answers: the webhooks, checkout and the ledger's writes take
/// POST, everything else is read-only.
fn allowed_methods(path: &str) -> &'static str {
    if path.starts_with("/api/v1/webhooks/")
        || billing_sync_api::plans::api::CHECKOUT_PATHS.contains(&path)
        || billing_sync_api::api_key::WRITE_PATHS.contains(&path)
    {
        "POST"
    } else {
        "GET"
    }
}

const PORTAL_PATH: &str = "/api/v1/operations/payment/customer-portal";

/// `GET /metrics`: Prometheus text format.
struct MetricsEndpoint {
    handle: metrics_exporter_prometheus::PrometheusHandle,
    store: Store,
}

impl Endpoint for MetricsEndpoint {
    type Output = poem::Response;

    async fn call(&self, _: poem::Request) -> poem::Result<Self::Output> {
        // The pool is read when scraped rather than on every query.
        let (open, idle) = self.store.pool_connections();
        let in_use = open.saturating_sub(u32::try_from(idle).unwrap_or(u32::MAX));
        metrics::gauge!("billing_sync_db_connections", "state" => "in_use").set(f64::from(in_use));
        metrics::gauge!("billing_sync_db_connections", "state" => "idle").set(idle as f64);
        Ok(poem::Response::builder()
            .content_type("text/plain; version=0.0.4")
            .body(self.handle.render()))
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed here, before the server starts listening, not when the future is
/// first polled: a SIGTERM that arrives right after startup must still mean "shut down
/// gracefully", not the default "die at once".
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    })
}

/// The longest a JWKS fetch may take: requests for a key not cached wait on it.
const JWKS_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections the kernel holds for the acceptor while it waits for a slot (capped by the
/// kernel's `net.core.somaxconn`, 4,096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `address` with a backlog of [`LISTEN_BACKLOG`]. `TcpListener::bind` asks for
/// 128, as the standard library does: at `MAX_CONNECTIONS` the acceptor waits for a slot, the
/// newcomers queue in the backlog, and past 128 the kernel drops their SYNs, which clients
/// resend after a second (a real delivery behind 400 keep-alive holders took 1.05 s).
pub(crate) fn listen(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Where `serve` sends published billing, from its settings.
pub(crate) fn outbox_destinations(args: &ServeArgs) -> anyhow::Result<crate::outbox::Destinations> {
    use crate::outbox::event_sender::EventDestination;
    use secrecy::ExposeSecret;
    let events = match (
        args.app_webhook_url.get(),
        args.app_webhook_secret.get(),
        args.svix_auth_token.get(),
    ) {
        (Some(url), Some(secret), _) => Some(EventDestination::Webhook(
            crate::outbox::app_webhook::AppWebhook::new(url, secret.expose_secret())?,
        )),
        (_, _, Some(token)) => Some(EventDestination::Svix(
            crate::outbox::svix_api::SvixApi::new(
                token.expose_secret(),
                args.svix_server_url.get().cloned(),
                &args.svix_app_id,
            ),
        )),
        _ => None,
    };
    let clerk = args
        .clerk_secret_key
        .get()
        .map(|key| {
            crate::outbox::clerk_metadata::ClerkMetadata::new(&args.clerk_api_base, key.clone())
        })
        .transpose()?;
    Ok(crate::outbox::Destinations {
        events,
        clerk,
        low_balance_threshold: args.credits_low_balance_threshold.get().copied(),
        feed: args.billing_api_keys.get().is_some(),
    })
}

/// The projections' settings, for live delivery and replay alike.
pub(crate) fn projection(common: &CommonArgs) -> Projection {
    Projection {
        stripe_org_metadata_key: common.stripe_org_metadata_key.clone(),
        client_reference_key: common.stripe_client_reference_secret.get().cloned(),
    }
}

/// The Stripe API client `serve` shares between refetching, the portal and checkout (one pool
/// of connections to Stripe), when `STRIPE_SECRET_KEY` is set.
pub(crate) fn serve_stripe_client(args: &ServeArgs) -> anyhow::Result<Option<StripeClient>> {
    args.stripe_api
        .stripe_secret_key
        .get()
        .map(|key| stripe_client(&args.stripe_api, key))
        .transpose()
}

/// The webhook ingestor `serve` configures: each provider's verifier when its secret is set,
/// the body limits, and refetching with `stripe` when asked for.
pub(crate) fn build_ingestor(
    args: &ServeArgs,
    common: &CommonArgs,
    store: Store,
    stripe_api: Option<StripeClient>,
) -> Ingestor {
    let stripe = args
        .stripe_webhook_secret
        .get()
        .map(|secrets| StripeVerifier::new(secrets.clone(), args.stripe_webhook_tolerance_secs));
    let clerk = args.clerk_webhook_secret.get().cloned();
    if stripe.is_none() {
        tracing::warn!(
            "STRIPE_WEBHOOK_SECRET is not set: the Stripe webhook route accepts nothing"
        );
    }
    if clerk.is_none() {
        tracing::warn!("CLERK_WEBHOOK_SECRET is not set: the Clerk webhook route accepts nothing");
    }
    let ingestor = Ingestor::new(
        store,
        projection(common),
        stripe,
        clerk,
        args.webhook_body_limit_bytes,
    )
    .with_body_timeout(args.request_timeout_secs)
    .with_body_bytes_in_flight(args.webhook_body_bytes_in_flight);
    match stripe_api {
        Some(client) if args.stripe_refetch_objects => ingestor
            .with_stripe_line_items(client.clone())
            .with_stripe_refetch(client),
        Some(client) => ingestor.with_stripe_line_items(client),
        None => ingestor,
    }
}

/// The Stripe API client with `key` (a connect timeout of at most 3 s within the call's).
pub(crate) fn stripe_client(
    api: &StripeApiArgs,
    key: &SecretString,
) -> anyhow::Result<StripeClient> {
    StripeClient::new(
        reqwest::Url::parse(&api.stripe_api_base).context("STRIPE_API_BASE")?,
        key.clone(),
        Duration::from_secs(3).min(api.stripe_timeout_ms),
        api.stripe_timeout_ms,
    )
    .context("building the Stripe client")
}

/// The operations on the synced state, each shared by the API's handlers.
pub type Operations = (Arc<Portal>, Arc<Plans>, Arc<Credits>);

/// The operations on the synced state: the customer portal, the plans page and the credit
/// ledger, sharing one way of admitting callers and, with `stripe`, one Stripe client. Starts
/// the ledger's writer on the current tokio runtime.
pub(crate) fn build_operations(
    args: &ServeArgs,
    common: &CommonArgs,
    store: Store,
    stripe: Option<StripeClient>,
) -> anyhow::Result<Operations> {
    let keys = match (args.clerk_jwt_key.get(), args.clerk_jwks_url.get()) {
        (Some(key), _) => Some(KeySource::Pem(Box::new(key.clone()))),
        (None, Some(url)) => {
            // Short: every request needing a key not cached waits on the one fetch in flight.
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(JWKS_TIMEOUT)
                .build()
                .context("building the JWKS client")?;
            Some(KeySource::Jwks(Box::new(JwksCache::new(
                url.clone(),
                client,
            ))))
        }
        (None, None) => None,
    };
    let verifier = keys.map(|keys| {
        anyhow::Ok(SessionVerifier::new(
            keys,
            args.clerk_issuer()?,
            args.clerk_authorized_parties.clone(),
        ))
    });
    let verifier = verifier.transpose()?;
    if verifier.is_none() {
        tracing::warn!(
            "neither CLERK_JWT_KEY nor CLERK_JWKS_URL is set: the portal, billing state and checkout answer 500 (not configured)"
        );
    }
    let access = Arc::new(Access::new(store, verifier).with_billing_roles(&args.billing_roles));
    let (portal_stripe, checkout_stripe) = match (stripe, args.app_base_url.get()) {
        (Some(stripe), Some(base)) => (
            Some((
                stripe.clone(),
                PortalSettings {
                    return_url: plans_page_url(base),
                    configuration: args.stripe_portal_configuration.get().cloned(),
                },
            )),
            Some((
                stripe,
                CheckoutSettings::for_app(
                    base,
                    &common.stripe_org_metadata_key,
                    &common.stripe_credits_metadata_key,
                    cors::page_origins(Some(base), &args.cors_allowed_origins),
                ),
            )),
        ),
        _ => {
            tracing::warn!(
                "STRIPE_SECRET_KEY or APP_BASE_URL is not set: the customer portal and checkout answer 500 (billing is not configured)"
            );
            (None, None)
        }
    };
    let per_minute = args.stripe_sessions_per_minute()?;
    if args.billing_api_keys.get().is_none() {
        tracing::warn!(
            "BILLING_API_KEYS is not set: the credits API and organization billing answer 500 (not configured)"
        );
    }
    let credits = Credits::new(
        access.clone(),
        args.billing_api_keys.get().cloned(),
        common.stripe_credits_metadata_key.clone(),
    );
    Ok((
        Arc::new(Portal::new(access.clone(), portal_stripe).with_sessions_per_minute(per_minute)),
        Arc::new(
            Plans::new(access, checkout_stripe)
                .with_sessions_per_minute(per_minute)
                .with_client_reference_key(common.stripe_client_reference_secret.get().cloned()),
        ),
        Arc::new(credits),
    ))
}
