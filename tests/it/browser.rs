//! The plans page's browser example (docs/portal-and-plans.md), exactly as written there, in a real headless Chromium: served
//! from `APP_BASE_URL`'s origin, from another origin in `CORS_ALLOWED_ORIGINS`, from the API's
//! own origin (a proxy in front of both, as an app served behind the same host), and from an
//! origin nobody allowed. Each page renders the synced catalog with the member's `__session`
//! cookie, and a click on a buy button posts the form and follows the 303 to Checkout; the
//! refused origin shows the refusal, and its forged form post is answered 403 with no session.
//!
//! `./scripts/test` installs Debian's chromium and sets `BILLING_SYNC_TEST_REQUIRE_CHROMIUM=1`;
//! without it, and without `chromium` on the PATH, this test says SKIPPED and passes.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use billing_sync_testkit::{Backend, TestDatabase};
use poem::listener::TcpAcceptor;
use poem::web::Data;
use poem::{EndpointExt, Response, Route, handler};

use crate::plans::{member, sync_catalog, token};
use crate::support;
use support::operations::setup;

/// The origin the example names for billing-sync, replaced by the test's.
const README_BILLING_ORIGIN: &str = r#"const billing = "https://billing.example.com";"#;

billing_sync_testkit::tool_test! {
    #[tokio::test]
    async fn the_plans_page_example_works_from_the_apps_origin_an_allowed_one_and_the_apis_own() {
        let Some(chromium) = support::tool("chromium", "BILLING_SYNC_TEST_REQUIRE_CHROMIUM") else {
            return;
        };
        let example = readme_example();
        let db = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");

        // The pages' servers first: their origins go into the settings. Each serves the example
        // pointed at billing-sync, the stand-in for Stripe's Checkout page, and (for the
        // same-origin page) billing-sync's API itself.
        let pages = PageServer::start().await;
        let app = pages.origin("app");
        let partner = pages.origin("partner");
        let stranger = pages.origin("stranger");
        let same = pages.origin("same");
        let s = setup(
            &db,
            &[],
            &[
                ("APP_BASE_URL", app.as_str()),
                ("CORS_ALLOWED_ORIGINS", partner.as_str()),
            ],
        )
        .await;
        pages.configure(Pages {
            example,
            api: s.server.base_url.clone(),
            session: token("user_b", Some(("org_b", "admin"))),
        });
        sync_catalog(&s.server, support::now() - 3_600).await;
        member(&s.server, "org_b", "user_b", "org:admin").await;

        let profiles = tempfile::tempdir().expect("a directory for browser profiles");
        let view = |name: &'static str, url: String| {
            let profile = profiles.path().join(name);
            let chromium = chromium.clone();
            async move { dump_dom(&chromium, &profile, &url).await }
        };

        // A price of its own for each: the same purchase again within minutes is one session.
        for (origin, price, why) in [
            (&app, "price_credits", "APP_BASE_URL's origin"),
            (
                &partner,
                "price_team_monthly",
                "an origin in CORS_ALLOWED_ORIGINS",
            ),
            (&same, "price_business", "the API's own origin"),
        ] {
            let page = view("view", format!("{origin}/")).await;
            for product in ["<h3>Team</h3>", "<h3>Business</h3>", "<h3>Credits</h3>"] {
                assert!(page.contains(product), "{why}: no {product} in\n{page}");
            }
            assert!(
                page.contains(r#"<p id="billing-error" hidden=""></p>"#),
                "{why}: an error shown in\n{page}"
            );

            // The click posts the form; the browser follows the 303 to Checkout's page.
            let sessions = s.stripe.checkout_sessions();
            let profile = profiles.path().join("buy");
            click_through(&chromium, &profile, &format!("{origin}/?buy={price}")).await;
            let created = s.stripe.checkout_sessions();
            assert_eq!(created.len(), sessions.len() + 1, "{why}: one session");
            let session = created.last().expect("a session");
            assert_eq!(session.field("line_items[0][price]"), Some(price));
            assert_eq!(session.field("client_reference_id"), Some("org_b"));
        }

        // An origin nobody allowed: the page says why it has no plans, and a checkout it posts
        // with the member's cookie (a `no-cors` fetch, which needs no preflight) is refused before
        // any session is made.
        let refused = view("stranger", format!("{stranger}/")).await;
        assert!(
            refused.contains(r#"<p id="billing-error">Billing is unavailable: Failed to fetch</p>"#),
            "the refusal is shown:\n{refused}"
        );
        assert!(!refused.contains("<h3>Team</h3>"), "{refused}");
        let sessions = s.stripe.checkout_sessions().len();
        let forged = view("forged", format!("{stranger}/?forge=price_credits")).await;
        assert!(
            forged.contains(r#"<p id="forged">posted</p>"#),
            "the forged post was sent:\n{forged}"
        );
        assert_eq!(
            s.stripe.checkout_sessions().len(),
            sessions,
            "no session for a refused origin"
        );
    }
}

/// Headless, and quiet: without the background-networking flags Chromium keeps trying to reach
/// Google's hosts, which a closed network refuses.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The browser example: the one `html` block of docs/portal-and-plans.md that names billing-sync's origin.
fn readme_example() -> String {
    support::doc("docs/portal-and-plans.md")
        .split("```html\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .find(|block| block.contains(README_BILLING_ORIGIN))
        .expect("docs/portal-and-plans.md's browser example names billing-sync's origin as the test expects")
        .to_owned()
}

/// The DOM of `url` once Chromium has run its scripts, followed what they started (fetches,
/// a form post and its redirect) and has nothing left to do: `--virtual-time-budget` lets the
/// page's clock run only while nothing is pending, so no wall-clock wait is involved.
async fn dump_dom(chromium: &Path, profile: &Path, url: &str) -> String {
    // A fresh profile per page: no cookie or cache carried from one page to the next.
    let _ = std::fs::remove_dir_all(profile);
    let output = tokio::process::Command::new(chromium)
        .args(CHROMIUM_FLAGS)
        .args(["--virtual-time-budget=20000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("chromium finishes a page")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 DOM")
}

/// Opens `url` in Chromium and waits until the browser sets off for Checkout (the page's click
/// posted the form and the browser followed the 303 to `https://checkout.stripe.com/…`), then
/// closes it. Chromium's virtual time does not reliably survive a navigation, so the arrival,
/// seen by the stand-in, is what this waits for.
async fn click_through(chromium: &Path, profile: &Path, url: &str) {
    // One per page, so that no connection of an earlier browser counts as this one's arrival.
    let mut checkout = CheckoutStandIn::start().await;
    let _ = std::fs::remove_dir_all(profile);
    let mut browser = tokio::process::Command::new(chromium)
        .args(CHROMIUM_FLAGS)
        .arg(checkout.resolver_rule())
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium runs");
    tokio::select! {
        arrived = checkout.arrivals.recv() => arrived.expect("the stand-in runs"),
        status = browser.wait() => panic!("chromium ended ({status:?}) before reaching Checkout"),
        () = tokio::time::sleep(Duration::from_secs(60)) => panic!("no arrival at Checkout from {url}"),
    }
    let _ = browser.kill().await;
}

/// Where the browser goes after checkout's 303: Stripe's `checkout.stripe.com`, which Chromium
/// is told to resolve to this listener. It speaks no TLS; it only sees the browser's hello
/// naming the host (TLS sends the server name in the clear), which is the arrival.
struct CheckoutStandIn {
    addr: std::net::SocketAddr,
    arrivals: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl CheckoutStandIn {
    async fn start() -> CheckoutStandIn {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let arrived = arrived.clone();
                tokio::spawn(async move {
                    let mut hello = vec![0; 4096];
                    let mut read = 0;
                    while read < hello.len() {
                        match connection.read(&mut hello[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                        if hello[..read]
                            .windows(CHECKOUT_HOST.len())
                            .any(|window| window == CHECKOUT_HOST.as_bytes())
                        {
                            let _ = arrived.send(());
                            return;
                        }
                    }
                });
            }
        });
        CheckoutStandIn { addr, arrivals }
    }

    /// The flag that sends Chromium's connections to Stripe's Checkout host here.
    fn resolver_rule(&self) -> String {
        format!("--host-resolver-rules=MAP {CHECKOUT_HOST} {}", self.addr)
    }
}

/// The host of the session URLs the Stripe stand-in answers with, as Stripe's own.
const CHECKOUT_HOST: &str = "checkout.stripe.com";

/// What the page servers serve, known once billing-sync has started.
#[derive(Clone)]
struct Pages {
    /// The page's example.
    example: String,
    /// billing-sync's base URL.
    api: String,
    /// The member's session token, set as Clerk's `__session` cookie by the page (cookies do
    /// not depend on the port, so billing-sync on 127.0.0.1 receives it too).
    session: String,
}

/// One server per origin (`app`, `partner`, `stranger`, `same`), each on its own port of
/// 127.0.0.1 (a port makes an origin), serving the same routes.
struct PageServer {
    origins: Vec<(&'static str, String)>,
    pages: std::sync::Arc<std::sync::OnceLock<Pages>>,
}

/// Which origin a page server is, and what it serves.
#[derive(Clone)]
struct Site {
    name: &'static str,
    pages: std::sync::Arc<std::sync::OnceLock<Pages>>,
}

impl PageServer {
    async fn start() -> PageServer {
        let pages = std::sync::Arc::new(std::sync::OnceLock::new());
        let mut origins = Vec::new();
        for name in ["app", "partner", "stranger", "same"] {
            let site = Site {
                name,
                pages: pages.clone(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let route = Route::new()
                .at("/", poem::get(example_page))
                .at("/api/*rest", proxy)
                .data(site);
            let acceptor = TcpAcceptor::from_tokio(listener).expect("acceptor");
            tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(route));
            origins.push((name, format!("http://{addr}")));
        }
        PageServer { origins, pages }
    }

    fn origin(&self, name: &str) -> String {
        self.origins
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, origin)| origin.clone())
            .expect("a page server of that name")
    }

    fn configure(&self, pages: Pages) {
        assert!(self.pages.set(pages).is_ok(), "configured once");
    }
}

/// The page's example, after a script that sets the session cookie. `?buy=PRICE` adds what a
/// user does next: click the button of that price once the plans are shown. `?forge=PRICE`
/// adds what a hostile page would do: post a checkout with the member's cookie.
#[handler]
fn example_page(request: &poem::Request, site: Data<&Site>) -> Response {
    let pages = site.pages.get().expect("configured");
    let billing = if site.name == "same" {
        ""
    } else {
        pages.api.trim_end_matches('/')
    };
    let example = pages.example.replace(
        README_BILLING_ORIGIN,
        &format!("const billing = {billing:?};"),
    );
    let query: Vec<(String, String)> = query_pairs(request.uri().query().unwrap_or_default());
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut driver = String::new();
    if let Some(price) = param("buy") {
        driver = format!(
            r#"<script>
  new MutationObserver(() => {{
    const input = document.querySelector('#plans input[value="{price}"]');
    if (input) input.form.querySelector("button").click();
  }}).observe(document.getElementById("plans"), {{ childList: true }});
</script>"#
        );
    }
    if let Some(price) = param("forge") {
        driver = format!(
            r#"<p id="forged"></p>
<script type="module">
  const body = new URLSearchParams({{ price_id: "{price}" }});
  await fetch("{api}/api/v1/operations/payment/checkout",
    {{ method: "POST", mode: "no-cors", credentials: "include", body }}).catch(() => {{}});
  document.getElementById("forged").textContent = "posted";
</script>"#,
            api = pages.api.trim_end_matches('/')
        );
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Plans</title></head><body>\n\
         <script>document.cookie = \"__session={session}; path=/\";</script>\n\
         {example}\n{driver}\n</body></html>",
        session = pages.session,
    );
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .body(html)
}

/// The API behind the page's own host, as a reverse proxy serves it: the browser's request
/// forwarded whole (its `Origin`, `Sec-Fetch-Site` and cookie included), the answer returned
/// whole, redirects not followed.
#[handler]
async fn proxy(request: &poem::Request, body: poem::Body, site: Data<&Site>) -> Response {
    let pages = site.pages.get().expect("configured");
    let target = format!(
        "{}{}",
        pages.api.trim_end_matches('/'),
        request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
    );
    let mut forwarded = support::http().request(request.method().clone(), target);
    for (name, value) in request.headers() {
        if name != poem::http::header::HOST {
            forwarded = forwarded.header(name, value);
        }
    }
    let body = body.into_vec().await.expect("the request body");
    let answer = forwarded
        .body(body)
        .send()
        .await
        .expect("billing-sync answers");
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response.body(answer.bytes().await.expect("the answer's body").to_vec())
}

/// `a=1&b=2` as pairs (values percent-decoded).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}
