//! The admin dashboard (`/admin/ui`) in a real browser: headless Chromium driven through
//! chromedriver (fantoccini), against the real engine on both backends. Sign in, see an order
//! placed over the API, watch its time left fall, cancel it with the button and see the API
//! agree; a forged POST without the CSRF token changes nothing; the cookie never opens the JSON
//! admin API; no cookie, a signed-out one or an expired one is sent to sign in; a dead letter
//! is retried with its button, and so is a dead-lettered webhook delivery; the Schedules page
//! shows a schedule's runs ok and another's failed, and each schedule's page its runs; a
//! Stripe payment (through its simulator) is on its order's page, and its late payment's
//! refund on both pages, dead-lettered then done; a generic one's refund says manual.
//!
//! Runs when `TEST_CHROMEDRIVER` names the chromedriver executable (`.ci/run` installs
//! Debian's `chromium` and `chromium-driver` and sets it); skipped with one line otherwise,
//! and a failure under CI. The session checks that need no browser (cookie attributes,
//! expiry) run over plain HTTP always.
//!
//! `docs/dashboard-overview.png` and `docs/dashboard-order.png` come from the ignored test
//! `dashboard::screenshots` (README "The admin dashboard" says how to run it).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;

use chrono::TimeDelta;
use diesel::prelude::*;
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use order_engine::db::schema::{admin_sessions, webhook_deliveries};
use order_engine::db::sql_types::At;
use order_engine::domain::time;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::schedules;
use crate::webhooks::{self, Receiver, Script};
use crate::{on_both_backends, on_both_backends_of};

const COOKIE: &str = "oe_admin_session";
/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// One browser at a time: each is a Chromium of its own, and this machine has two cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn chromedriver() -> Option<String> {
    static SKIP: Once = Once::new();
    service_url("TEST_CHROMEDRIVER", "browser (dashboard)", &SKIP)
}

/// A headless Chromium under a chromedriver of its own on a free port, driven synchronously.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    base: String,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Browser {
    fn open(driver_exe: &str, base: &str) -> Browser {
        let one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver_exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_exe}: {e}"));
        wait_for("chromedriver to listen", PATIENCE, || {
            TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-background-networking",
                         "--disable-component-update", "--window-size=1280,800"],
            }),
        );
        let client = runtime
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a Chromium session");
        Browser {
            runtime,
            client: Some(client),
            driver,
            base: base.to_string(),
            _one: one,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.runtime
            .block_on(self.client().goto(&url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path (and query) the browser is on.
    fn path(&self) -> String {
        let url = self
            .runtime
            .block_on(self.client().current_url())
            .expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Runs `act` on the element `css` matches, if one is there now.
    fn with_element<T, F, Fut>(&self, css: &str, act: F) -> Result<T, String>
    where
        F: FnOnce(Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, CmdError>>,
    {
        self.runtime.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .map_err(|e| format!("no {css}: {e}"))?;
            act(element).await.map_err(|e| format!("{css}: {e}"))
        })
    }

    /// The texts of every element `css` matches now, in page order.
    fn texts(&self, css: &str) -> Result<Vec<String>, String> {
        self.runtime.block_on(async {
            let mut texts = Vec::new();
            for element in self
                .client()
                .find_all(Locator::Css(css))
                .await
                .map_err(|e| format!("{css}: {e}"))?
            {
                texts.push(element.text().await.map_err(|e| format!("{css}: {e}"))?);
            }
            Ok(texts)
        })
    }

    /// The text of the element `css` matches, if one is there now.
    fn text(&self, css: &str) -> Result<String, String> {
        self.with_element(css, |e| async move { e.text().await })
    }

    /// An attribute of the element `css` matches, if one is there now.
    fn attr(&self, css: &str, name: &str) -> Result<String, String> {
        self.with_element(css, |e| async move { e.attr(name).await })?
            .ok_or_else(|| format!("{css} has no {name}"))
    }

    /// Waits until the element `css` shows text that `accept` takes.
    #[track_caller]
    fn wait_text(&self, css: &str, what: &str, accept: impl Fn(&str) -> bool) -> String {
        let texts = self.wait_texts(css, what, |texts| texts.first().is_some_and(|t| accept(t)));
        texts.into_iter().next().unwrap_or_default()
    }

    /// Waits until the elements `css` matches show texts that `accept` takes.
    #[track_caller]
    fn wait_texts(&self, css: &str, what: &str, accept: impl Fn(&[String]) -> bool) -> Vec<String> {
        wait_for(what, PATIENCE, || {
            let texts = self.texts(css)?;
            if accept(&texts) {
                Ok(texts)
            } else {
                Err(format!("{css} shows {texts:?}"))
            }
        })
    }

    #[track_caller]
    fn wait_path(&self, what: &str, accept: impl Fn(&str) -> bool) -> String {
        wait_for(what, PATIENCE, || {
            let path = self.path();
            if accept(&path) {
                Ok(path)
            } else {
                Err(format!("on {path}"))
            }
        })
    }

    fn click(&self, css: &str) {
        self.with_element(css, |e| async move { e.click().await })
            .unwrap_or_else(|e| panic!("click: {e}"));
    }

    /// Opens the page at `path` with its link `label` in the nav, which it marks active.
    #[track_caller]
    fn open_from_nav(&self, path: &str, label: &str) {
        self.click(&format!("header nav a[href='{path}']"));
        self.wait_path(&format!("the {label} page"), |p| p == path);
        assert_eq!(self.text("header nav a.active").unwrap(), label);
    }

    fn type_into(&self, css: &str, text: &str) {
        self.with_element(css, |e| async move { e.send_keys(text).await })
            .unwrap_or_else(|e| panic!("type: {e}"));
    }

    /// Signs in through the form and waits for the overview.
    fn sign_in(&self, token: &str) {
        self.goto("/admin/ui/login");
        self.type_into("#token", token);
        self.click("#sign-in");
    }

    /// The session cookie's value (HttpOnly: no script could read it; WebDriver can).
    fn session_cookie(&self) -> String {
        self.runtime
            .block_on(self.client().get_named_cookie(COOKIE))
            .expect("the session cookie is set")
            .value()
            .to_string()
    }

    /// The session's CSRF token, from the sign-out form every page has.
    fn csrf_token(&self) -> String {
        self.attr("header form input[name=csrf_token]", "value")
            .expect("a CSRF token on the page")
    }

    fn screenshot(&self, path: &std::path::Path) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A request to the engine as a browser holding `cookie` would send it, redirects not
/// followed.
fn with_cookie(app: &TestApp, method: &str, path: &str, cookie: &str, form: Option<&str>) -> Resp {
    let cookie = format!("{COOKIE}={cookie}");
    let mut headers = vec![("Cookie", cookie.as_str())];
    if form.is_some() {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    app.not_following_redirects()
        .request(method, path, &headers, form.map(str::as_bytes))
}

#[track_caller]
fn assert_sent_to_sign_in(resp: &Resp) {
    assert_eq!(resp.status, 303, "{}", resp.text);
    assert_eq!(resp.header("Location"), Some("/admin/ui/login"));
}

#[track_caller]
fn assert_html(resp: &Resp, status: u16) {
    assert_eq!(resp.status, status, "{}", resp.text);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        resp.headers
    );
    assert!(resp.text.contains("<html"), "{}", resp.text);
}

/// The stored sessions' token hashes.
fn stored_sessions(app: &TestApp) -> Vec<String> {
    admin_sessions::table
        .select(admin_sessions::token_hash)
        .load(&mut app.db())
        .expect("read admin_sessions")
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn no(order: &Value) -> &str {
    order["order_no"].as_str().expect("order_no")
}

on_both_backends! {
    fn sign_in_watch_the_time_fall_and_cancel_with_the_button(app) {
        let Some(driver) = chromedriver() else {
            return;
        };
        // Without a session every page sends the browser to sign in.
        for path in ["/admin/ui", "/admin/ui/orders", "/admin/ui/live", "/admin/ui/nope"] {
            assert_sent_to_sign_in(&app.not_following_redirects().request("GET", path, &[], None));
        }
        let browser = Browser::open(&driver, &app.base);
        browser.goto("/admin/ui");
        browser.wait_path("the sign-in page", |p| p == "/admin/ui/login");

        // A wrong token: the sign-in page again, with an error (401 over HTTP).
        browser.sign_in("not-the-token");
        browser.wait_text("#login-error", "the sign-in error", |t| t.contains("not the admin token"));
        let refused = app.not_following_redirects().request(
            "POST", "/admin/ui/login",
            &[("Content-Type", "application/x-www-form-urlencoded")], Some(b"token=wrong"));
        assert_html(&refused, 401);
        assert!(refused.header("Set-Cookie").is_none());
        assert!(stored_sessions(app).is_empty());

        browser.sign_in(ADMIN_TOKEN);
        browser.wait_path("the overview", |p| p == "/admin/ui");
        browser.wait_text("#pending-orders", "no pending order yet", |t| t == "0");

        // The cookie holds a random token; the database only its SHA-256.
        let cookie = browser.session_cookie();
        assert_eq!(cookie.len(), 64, "{cookie}");
        assert_eq!(stored_sessions(app), vec![sha256_hex(&cookie)]);

        // An order placed over the API shows up on the overview without a reload.
        let (user_id, token) = app.user_with_token(0);
        let course = app.course(2_500);
        let order = app.place_ok(&token, &[course], None, 0);
        let order_no = no(&order).to_string();
        browser.wait_text("#pending-orders", "the overview to count the order", |t| t == "1");
        browser.wait_text("#live-actors", "the overview to count its actor", |t| t == "1");
        let first_bar = browser.attr("#deadline-chart rect.bar", "data-count").unwrap();
        assert_eq!(first_bar, "0", "its deadline is 30 minutes away, not in the first minute");

        // Found on the orders page by its user, and by its number.
        browser.goto(&format!("/admin/ui/orders?user_id={user_id}"));
        browser.wait_text("#orders tbody", "the order in its user's list", |t| t.contains(&order_no));
        browser.type_into("#find-order-no", &order_no);
        browser.click("#order-find button");
        browser.wait_path("the order page", |p| p == format!("/admin/ui/orders/{order_no}"));
        assert_eq!(browser.text("#order-status").unwrap(), "pending");
        assert!(browser.text("#order-fields").unwrap().contains("25.00"));

        // Its time left falls while the page stays open.
        let read_left = || -> Result<i64, String> {
            browser
                .attr("#time-left", "data-remaining-ms")?
                .parse::<i64>()
                .map_err(|e| e.to_string())
        };
        let first = wait_for("the time left", PATIENCE, &read_left);
        assert!(first > 1_700_000 && first <= 1_800_000, "time left {first} ms");
        let shown = browser.text("#time-left").unwrap();
        let later = wait_for("the time left to fall", PATIENCE, || {
            let now = read_left()?;
            if now < first { Ok(now) } else { Err(format!("still {now} ms")) }
        });
        assert!(later < first);
        browser.wait_text("#time-left", "the shown time to change", |t| t != shown);
        let current = browser.path();
        assert_eq!(current, format!("/admin/ui/orders/{order_no}"), "no reload, no navigation");

        // A forged POST with the session cookie but without the CSRF token (or with a wrong
        // one) is refused with 403 and changes nothing.
        let cancel_path = format!("/admin/ui/orders/{order_no}/cancel");
        for form in [None, Some("csrf_token="), Some("csrf_token=0123456789abcdef")] {
            let forged = with_cookie(app, "POST", &cancel_path, &cookie, form);
            assert_html(&forged, 403);
            assert!(forged.text.contains("security token"), "{}", forged.text);
        }
        assert_eq!(app.admin_order(&order_no)["order"]["status"], "pending");
        // Nor does the CSRF token without the session.
        let csrf = browser.csrf_token();
        let cookieless = app.not_following_redirects().request(
            "POST", &cancel_path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(format!("csrf_token={csrf}").as_bytes()));
        assert_sent_to_sign_in(&cookieless);
        assert_eq!(app.admin_order(&order_no)["order"]["status"], "pending");

        // The cookie never opens the JSON admin API.
        for path in [format!("/admin/orders/{order_no}"), "/admin/actors".to_string(),
                     "/admin/effects".to_string()] {
            with_cookie(app, "GET", &path, &cookie, None).assert_unauthenticated();
        }
        with_cookie(app, "POST", &format!("/admin/orders/{order_no}/cancel"), &cookie, None)
            .assert_unauthenticated();
        assert_eq!(app.admin_order(&order_no)["order"]["status"], "pending");

        // Cancel with the button: back on the order page, which says so, and the API agrees.
        browser.click("#cancel-order");
        browser.wait_path("the order page after the cancel",
            |p| p == format!("/admin/ui/orders/{order_no}?done=cancelled"));
        browser.wait_text("#notice", "the cancel notice", |t| t.contains("cancelled"));
        assert_eq!(browser.text("#order-status").unwrap(), "cancelled");
        assert_eq!(browser.text("#close-reason").unwrap(), "reason admin");
        assert!(browser.text("#no-actor").is_ok(), "no live actor after the transition");
        assert!(browser.text("#cancel-order").is_err(), "no Cancel button on a closed order");
        let view = app.admin_order(&order_no);
        assert_eq!(view["order"]["status"], "cancelled", "{view}");
        assert_eq!(view["order"]["close_reason"], "admin", "{view}");
        assert_eq!(view["actor"]["alive"], false, "{view}");
        crate::invariants::check(app);

        // Cancelling it again (with a valid token) is the 409 page; nothing changes.
        let again = with_cookie(app, "POST", &cancel_path, &cookie,
            Some(&format!("csrf_token={csrf}")));
        assert_html(&again, 409);
        assert!(again.text.contains("not pending"), "{}", again.text);
        assert_eq!(app.admin_order(&order_no)["order"]["close_reason"], "admin");

        // A success that arrives after the cancel is a late payment, on its page and the
        // order's.
        let trade = trade_no();
        app.callback(&order_no, &trade, SUCCESS, order["payable_cents"].as_i64().unwrap())
            .assert_status(200);
        browser.goto("/admin/ui/late-payments");
        browser.wait_text("#late-payments tbody", "the late payment listed", |t| {
            t.contains(&order_no) && t.contains(&trade) && t.contains("late_payment")
        });
        // Through the generic callback: its refund is manual, as the page's sub-title says.
        let late_id = app.admin("GET", "/admin/late-payments", None).assert_status(200)
            ["data"][0]["id"].to_string();
        let cells = browser.texts(&format!("#late-{late_id} td")).unwrap();
        assert_eq!(cells[3..4], ["generic"], "{cells:?}");
        assert_eq!(cells[8..], ["manual", "—", "—"], "{cells:?}");
        let sub = browser.text("#late-payments-sub").unwrap();
        assert!(sub.contains("provider_refund") && sub.contains("generic provider's refunds are manual"),
            "{sub}");
        browser.goto(&format!("/admin/ui/orders/{order_no}"));
        browser.wait_text("#order-late-payments", "the order's late payment", |t| t.contains(&trade));
        let cells = browser.texts(&format!("#order-late-{late_id} td")).unwrap();
        assert_eq!(cells[2..3], ["generic"], "{cells:?}");
        assert_eq!(cells[6..], ["manual", "—", "—"], "{cells:?}");
        assert!(browser.text("#order-payments").unwrap().contains("late_payment"));
        assert!(browser.text("#no-provider-payments").is_ok(), "no provider payment started");
        crate::invariants::check(app);

        // Bad input is an HTML page with the API's status, never a 500.
        browser.goto("/admin/ui/orders/no_such_order_1");
        browser.wait_text("#error-status", "the 404 page", |t| t.starts_with("404"));
        assert_html(&with_cookie(app, "GET", "/admin/ui/orders/no_such_order_1", &cookie, None), 404);
        assert_html(&with_cookie(app, "GET", "/admin/ui/orders?status=bogus", &cookie, None), 400);
        assert_html(&with_cookie(app, "GET", "/admin/ui/orders?user_id=x", &cookie, None), 400);
        assert_html(&with_cookie(app, "GET", "/admin/ui/orders?after=x", &cookie, None), 400);
        assert_html(&with_cookie(app, "GET", "/admin/ui/effects?status=bogus", &cookie, None), 400);
        assert_html(&with_cookie(app, "POST", "/admin/ui/effects/x/retry", &cookie,
            Some(&format!("csrf_token={csrf}"))), 400);
        assert_html(&with_cookie(app, "POST", "/admin/ui/effects/999999/retry", &cookie,
            Some(&format!("csrf_token={csrf}"))), 404);
        assert_html(&with_cookie(app, "DELETE", "/admin/ui/orders", &cookie, None), 405);
        assert_html(&with_cookie(app, "GET", "/admin/ui/nope", &cookie, None), 404);

        // Sign out: the session row is gone and the old cookie is sent to sign in.
        browser.goto("/admin/ui");
        browser.click("#sign-out");
        browser.wait_path("the sign-in page after sign-out", |p| p == "/admin/ui/login");
        assert!(stored_sessions(app).is_empty());
        assert_sent_to_sign_in(&with_cookie(app, "GET", "/admin/ui", &cookie, None));
        browser.goto("/admin/ui/orders");
        browser.wait_path("the sign-in page for a signed-out browser", |p| p == "/admin/ui/login");
    }
}

on_both_backends! {
    fn a_dead_letter_is_retried_with_its_button(app)
        with [("effects.max_attempts", "3"), ("effects.backoff_base_ms", "50")]
    {
        let Some(driver) = chromedriver() else {
            return;
        };
        let (user_id, token) = app.user_with_token(0);
        let course = app.course(1_500);
        let order = app.place_ok(&token, &[course], None, 0);
        let order_no = no(&order).to_string();
        let mut conn = app.db();
        reject_grants(&mut conn);
        app.pay(&order);
        let effect = wait_for("the grant to be dead-lettered", Duration::from_secs(30), || {
            let list = app.admin("GET", "/admin/effects?status=dead_lettered", None)
                .assert_status(200)["data"].clone();
            list.as_array().and_then(|l| l.first().cloned()).ok_or_else(|| list.to_string())
        });
        let id = effect["id"].as_i64().expect("effect id");

        let browser = Browser::open(&driver, &app.base);
        browser.sign_in(ADMIN_TOKEN);
        browser.wait_path("the overview", |p| p == "/admin/ui");
        browser.wait_text("#dead-letters", "the overview to show the dead letter", |t| t == "1");
        browser.goto(&format!("/admin/ui/orders/{order_no}"));
        browser.wait_text("#order-effects", "the order's dead-lettered grant", |t| {
            t.contains("dead_lettered") && t.contains("injected")
        });
        assert!(browser.text("#order-payments").unwrap().contains("paid"));

        browser.goto("/admin/ui/effects");
        let row = format!("#effect-{id}");
        browser.wait_text(&row, "the dead letter with its error", |t| t.contains("injected"));
        allow_grants(&mut conn);
        browser.click(&format!("{row} button.retry"));
        browser.wait_path("the effects page after the retry", |p| {
            p == format!("/admin/ui/effects?status=dead_lettered&retried={id}")
        });
        browser.wait_text("#notice", "the retry notice", |t| t == format!("Effect {id} re-queued."));
        let view = app.wait_effects_done(&order_no);
        assert_eq!(view["effects"][0]["status"], "done", "{view}");
        assert_eq!(app.admin_user(user_id)["courses"][0]["course_id"], course);
        browser.goto("/admin/ui");
        browser.wait_text("#dead-letters", "no dead letter left", |t| t == "0");
        crate::invariants::check(app);
    }
}

/// A Stripe payment through the simulator, on the order page and the late-payments page: the
/// order page's "Provider payments" table shows it started (provider, status, session id, its
/// pay URL as a link, no code URL), then closed once the order is cancelled; paid at Stripe
/// after the cancel, it is a late payment whose refund through Stripe fails twice
/// (`effects.max_attempts` 2): both pages show the refund dead-lettered with its attempts and
/// error; retried with Stripe answering again, both show it done.
fn provider_payments_and_their_refunds_are_shown(backend: Backend) {
    use crate::sim::stripe::StripeSim;
    use crate::sim::{Op, Simulator};

    let Some(driver) = chromedriver() else {
        return;
    };
    let sim = StripeSim::start();
    let mut settings = sim.engine_settings();
    for (key, value) in [
        ("providers.public_base_url", "https://pay.example.com"),
        ("effects.max_attempts", "2"),
        ("effects.backoff_base_ms", "50"),
        ("effects.backoff_max_ms", "200"),
    ] {
        settings.push((key.to_string(), value.to_string()));
    }
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let Some(app) = TestApp::spawn_with(backend, &pairs) else {
        return;
    };
    let app = &app;
    let (_, token) = app.user_with_token(0);
    let order = app.place_ok(&token, &[app.course(7_000)], None, 0);
    let order_no = no(&order).to_string();
    let order_page = format!("/admin/ui/orders/{order_no}");

    let browser = Browser::open(&driver, &app.base);
    browser.sign_in(ADMIN_TOKEN);
    browser.wait_path("the overview", |p| p == "/admin/ui");
    browser.goto(&order_page);
    browser.wait_text("#no-provider-payments", "no provider payment yet", |t| {
        t.contains("No payment")
    });

    let payment = app
        .as_user(
            &token,
            "POST",
            &format!("/api/orders/{order_no}/payments"),
            Some(json!({"provider": "stripe"})),
        )
        .assert_status(201)
        .clone();
    let session_id = payment["provider_ref"]
        .as_str()
        .expect("the session id")
        .to_string();
    let pay_url = payment["pay_url"]
        .as_str()
        .expect("the Checkout URL")
        .to_string();
    let row = "#provider-payment-stripe";
    browser.goto(&order_page);
    let cells = browser.wait_texts(&format!("{row} td"), "the started payment", |c| {
        c.len() == 6
    });
    assert_eq!(
        cells[..5],
        [
            "stripe",
            "started",
            session_id.as_str(),
            pay_url.as_str(),
            "—"
        ],
        "{cells:?}"
    );
    assert_eq!(
        cells[5],
        payment["created_at"].as_str().unwrap(),
        "{cells:?}"
    );
    assert_eq!(
        browser.attr(&format!("{row} .pay-url a"), "href").unwrap(),
        pay_url
    );
    assert!(browser.text("#no-provider-payments").is_err());

    // Cancelled: the session is expired at Stripe and the payment shows closed.
    app.admin("POST", &format!("/admin/orders/{order_no}/cancel"), None)
        .assert_status(200);
    wait_for("the provider close", PATIENCE, || {
        let view = app.admin_order(&order_no);
        match view["payments"][0]["status"].as_str() {
            Some("closed") => Ok(()),
            other => Err(format!("payment {other:?}: {view}")),
        }
    });
    browser.goto(&order_page);
    browser.wait_text(&format!("{row} .pill"), "the payment closed", |t| {
        t == "closed"
    });

    // Paid at Stripe anyway: a late payment, whose refund Stripe refuses twice.
    sim.fail_next(Op::Refund, 2);
    let (status, body) = sim.pay_and_notify(&app.base, &order_no, 7_000);
    assert_eq!(status, 200, "{body}");
    let late = wait_for(
        "the refund to be dead-lettered",
        Duration::from_secs(30),
        || {
            let list = app
                .admin("GET", "/admin/late-payments", None)
                .assert_status(200)["data"]
                .clone();
            match list[0]["refund"]["status"].as_str() {
                Some("dead_lettered") => Ok(list[0].clone()),
                _ => Err(list.to_string()),
            }
        },
    );
    assert_eq!(late["provider"], "stripe", "{late}");
    let late_id = late["id"].to_string();
    let trade = late["trade_no"]
        .as_str()
        .expect("the payment intent")
        .to_string();
    let last_error = late["refund"]["last_error"]
        .as_str()
        .expect("the refund's error")
        .to_string();

    browser.goto("/admin/ui/late-payments");
    let cells = browser.wait_texts(&format!("#late-{late_id} td"), "the late payment", |c| {
        c.len() == 11
    });
    assert_eq!(
        cells[1..5],
        [order_no.as_str(), "late_payment", "stripe", trade.as_str()],
        "{cells:?}"
    );
    assert_eq!(cells[8..10], ["dead_lettered", "2"], "{cells:?}");
    assert!(
        cells[10].contains(last_error.trim()),
        "{last_error:?} in {cells:?}"
    );
    browser.goto(&order_page);
    let cells = browser.wait_texts(
        &format!("#order-late-{late_id} td"),
        "the order's late payment",
        |c| c.len() == 9,
    );
    assert_eq!(
        cells[1..4],
        ["late_payment", "stripe", trade.as_str()],
        "{cells:?}"
    );
    assert_eq!(cells[6..8], ["dead_lettered", "2"], "{cells:?}");
    assert!(
        cells[8].contains(last_error.trim()),
        "{last_error:?} in {cells:?}"
    );
    let callbacks = browser.text("#order-payments").unwrap();
    assert!(
        callbacks.contains("stripe") && callbacks.contains(&trade),
        "{callbacks}"
    );

    // Retried, Stripe refunds it: done on both pages.
    let dead = app
        .admin("GET", "/admin/effects?status=dead_lettered", None)
        .assert_status(200)["data"]
        .clone();
    let effect = dead
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|e| e["order_no"] == order_no.as_str() && e["kind"] == "provider_refund")
        })
        .cloned()
        .unwrap_or_else(|| panic!("the dead-lettered provider_refund effect in {dead}"));
    app.admin(
        "POST",
        &format!("/admin/effects/{}/retry", effect["id"]),
        None,
    )
    .assert_status(200);
    wait_for("the refund to be done", Duration::from_secs(30), || {
        browser.goto("/admin/ui/late-payments");
        let cells = browser.texts(&format!("#late-{late_id} td"))?;
        match cells.get(8..) {
            Some([status, _, error]) if status == "done" && error == "—" => Ok(()),
            _ => Err(format!("{cells:?}")),
        }
    });
    assert_eq!(sim.refunds().len(), 1, "refunded once at Stripe");
    browser.goto(&order_page);
    let cells = browser.wait_texts(
        &format!("#order-late-{late_id} td"),
        "the refund done",
        |c| c.get(6).is_some_and(|s| s == "done"),
    );
    assert_eq!(cells[8], "—", "no error once done: {cells:?}");
    crate::invariants::check(app);
}
on_both_backends_of!(provider_payments_and_their_refunds_are_shown);

/// Settings for one webhook endpoint at `receiver` that dead-letters a delivery at its first
/// failure (retries quick, as in the webhook tests).
fn one_attempt_endpoint(receiver: &Receiver) -> Vec<(String, String)> {
    webhooks::hook_settings(
        &[(receiver.url(), webhooks::SECRET, None)],
        &[("webhooks.max_attempts", "1")],
    )
}

/// Places an order whose `placed` event the failing receiver dead-letters; returns the order
/// number and the dead-lettered delivery as `GET /admin/deliveries` lists it.
fn dead_lettered_delivery(app: &TestApp) -> (String, Value) {
    let (_, token) = app.user_with_token(0);
    let order = app.place_ok(&token, &[app.course(500)], None, 0);
    let dead = wait_for(
        "the placed event dead-lettered",
        Duration::from_secs(30),
        || match webhooks::deliveries(app, "?status=dead_lettered").as_slice() {
            [dead] => Ok(dead.clone()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        (&dead["order_no"], dead["kind"].as_str()),
        (&order["order_no"], Some("placed"))
    );
    (no(&order).to_string(), dead)
}

/// Delivery `id` as stored: status, attempts, last error and next attempt, all of which a
/// retry changes.
fn stored_delivery(app: &TestApp, id: i64) -> (String, i32, Option<String>, chrono::NaiveDateTime) {
    use webhook_deliveries::{attempts, last_error, next_attempt_at, status};
    webhook_deliveries::table
        .find(id)
        .select((status, attempts, last_error, next_attempt_at))
        .first(&mut app.db())
        .expect("the delivery's row")
}

/// Signs in over plain HTTP: the session cookie's value and the session's CSRF token.
fn http_session(app: &TestApp) -> (String, String) {
    let login = app.not_following_redirects().request(
        "POST",
        "/admin/ui/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(format!("token={ADMIN_TOKEN}").as_bytes()),
    );
    assert_eq!(login.status, 303, "{}", login.text);
    let cookie = login
        .header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.strip_prefix(&format!("{COOKIE}=")))
        .expect("the session cookie")
        .to_string();
    let csrf = admin_sessions::table
        .find(sha256_hex(&cookie))
        .select(admin_sessions::csrf_token)
        .first(&mut app.db())
        .expect("the session's CSRF token");
    (cookie, csrf)
}

/// A delivery the failing endpoint dead-lettered is on the Deliveries page (opened from the
/// nav) and on its order's page; once the endpoint answers 200 again, its Retry button
/// re-queues it, the page shows it done and the receiver has it.
fn a_dead_lettered_delivery_is_retried_with_its_button(backend: Backend) {
    let Some(driver) = chromedriver() else {
        return;
    };
    let receiver = Receiver::start(Script::Answer(500));
    webhooks::run(backend, &one_attempt_endpoint(&receiver), |app| {
        let (order_no, dead) = dead_lettered_delivery(app);
        let id = dead["id"].as_i64().expect("delivery id");
        let event_id = dead["event_id"].to_string();
        let last_error = dead["last_error"].as_str().expect("its last error");

        let browser = Browser::open(&driver, &app.base);
        browser.sign_in(ADMIN_TOKEN);
        browser.wait_path("the overview", |p| p == "/admin/ui");
        browser.open_from_nav("/admin/ui/deliveries", "Deliveries");
        let row = format!("#delivery-{id}");
        let shown = browser.wait_text(&row, "the dead letter", |t| t.contains("dead_lettered"));
        for wanted in [order_no.as_str(), &receiver.url(), "placed", last_error] {
            assert!(shown.contains(wanted), "{wanted:?} in {shown:?}");
        }

        // Its order's page lists it too.
        browser.click(&format!("{row} a"));
        browser.wait_path("its order's page", |p| {
            p == format!("/admin/ui/orders/{order_no}")
        });
        browser.wait_text(
            "#order-deliveries",
            "the order's dead-lettered delivery",
            |t| t.contains("dead_lettered") && t.contains(&receiver.url()),
        );

        receiver.set(Script::Answer(200));
        browser.goto("/admin/ui/deliveries");
        browser.click(&format!("{row} button.retry"));
        browser.wait_path("the deliveries page after the retry", |p| {
            p == format!("/admin/ui/deliveries?status=dead_lettered&retried={id}")
        });
        browser.wait_text("#notice", "the retry notice", |t| {
            t == format!("Delivery {id} re-queued.")
        });
        wait_for("the page to show the delivery done", PATIENCE, || {
            browser.goto("/admin/ui/deliveries?status=done");
            match browser.text(&format!("{row} .pill"))?.as_str() {
                "done" => Ok(()),
                other => Err(format!("{row} is {other}")),
            }
        });
        assert!(
            browser.text(&format!("{row} button.retry")).is_err(),
            "no Retry once done"
        );
        receiver.wait(
            "the receiver to get the retried delivery",
            PATIENCE,
            |seen| seen.iter().any(|r| r.id() == event_id && r.delivered()),
        );
    });
}
on_both_backends_of!(a_dead_lettered_delivery_is_retried_with_its_button);

/// Over plain HTTP: the deliveries page and its Retry send a browser without a session to
/// sign in; a Retry without the session's CSRF token, or with a wrong one, is 403 and changes
/// nothing; with it, 303 back to the dead letters saying so, and the delivery is sent again;
/// bad input is the 400, 404 and 409 pages.
fn a_delivery_retry_needs_the_session_and_its_csrf_token(backend: Backend) {
    let receiver = Receiver::start(Script::Answer(500));
    webhooks::run(backend, &one_attempt_endpoint(&receiver), |app| {
        let (_, dead) = dead_lettered_delivery(app);
        let id = dead["id"].as_i64().expect("delivery id");
        let retry_path = format!("/admin/ui/deliveries/{id}/retry");
        let http = app.not_following_redirects();
        assert_sent_to_sign_in(&http.request("GET", "/admin/ui/deliveries", &[], None));

        let (cookie, csrf) = http_session(app);
        let form = format!("csrf_token={csrf}");
        let cookieless = http.request(
            "POST",
            &retry_path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form.as_bytes()),
        );
        assert_sent_to_sign_in(&cookieless);
        let page = with_cookie(app, "GET", "/admin/ui/deliveries", &cookie, None);
        assert_html(&page, 200);
        assert!(
            page.text.contains(&format!(r#"action="{retry_path}""#)),
            "{}",
            page.text
        );

        let before = stored_delivery(app, id);
        assert_eq!(before.0, "dead_lettered");
        for forged_form in [
            None,
            Some("csrf_token="),
            Some("csrf_token=0123456789abcdef"),
        ] {
            let forged = with_cookie(app, "POST", &retry_path, &cookie, forged_form);
            assert_html(&forged, 403);
            assert!(forged.text.contains("security token"), "{}", forged.text);
        }
        assert_eq!(
            stored_delivery(app, id),
            before,
            "a refused retry changes nothing"
        );
        assert_eq!(receiver.requests().len(), 1, "nothing sent again");

        for query in ["?status=bogus", "?after=x", "?retried=x"] {
            let path = format!("/admin/ui/deliveries{query}");
            assert_html(&with_cookie(app, "GET", &path, &cookie, None), 400);
        }
        for (path, status) in [
            ("/admin/ui/deliveries/x/retry", 400),
            ("/admin/ui/deliveries/999999/retry", 404),
        ] {
            assert_html(
                &with_cookie(app, "POST", path, &cookie, Some(&form)),
                status,
            );
        }

        receiver.set(Script::Answer(200));
        let retried = with_cookie(app, "POST", &retry_path, &cookie, Some(&form));
        let back = format!("/admin/ui/deliveries?status=dead_lettered&retried={id}");
        assert_eq!(
            (retried.status, retried.header("Location")),
            (303, Some(back.as_str())),
            "{}",
            retried.text
        );
        let notice = with_cookie(app, "GET", &back, &cookie, None);
        assert!(
            notice.text.contains(&format!("Delivery {id} re-queued.")),
            "{}",
            notice.text
        );
        wait_for(
            "the retried delivery done",
            PATIENCE,
            || match stored_delivery(app, id) {
                (status, ..) if status == "done" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        let again = with_cookie(app, "POST", &retry_path, &cookie, Some(&form));
        assert_html(&again, 409);
        assert!(again.text.contains("not dead-lettered"), "{}", again.text);
    });
}
on_both_backends_of!(a_delivery_retry_needs_the_session_and_its_csrf_token);

/// The Schedules page (opened from the nav) shows, without a reload, an every-second webhook
/// schedule whose receiver answers 200 run ok, and an `at` one whose receiver answers 500
/// failed with its error, marked as failed, as `GET /admin/schedules` has them; each
/// schedule's page lists its runs, newest first.
fn schedules_show_their_latest_runs_and_failures(backend: Backend) {
    let Some(driver) = chromedriver() else {
        return;
    };
    let ok = Receiver::start(Script::Answer(200));
    let failing = Receiver::start(Script::Answer(500));
    let file = format!(
        "{}\n{}",
        schedules::every_second_webhook("tick", &ok.url()),
        schedules::webhook_at(
            "broken",
            time::now() + TimeDelta::seconds(2),
            &failing.url()
        ),
    );
    let Some(app) = TestApp::spawn_with_file(backend, &[], Some(&file)) else {
        return;
    };
    let browser = Browser::open(&driver, &app.base);
    browser.sign_in(ADMIN_TOKEN);
    browser.wait_path("the overview", |p| p == "/admin/ui");
    browser.open_from_nav("/admin/ui/schedules", "Schedules");
    // The live table is swapped every two seconds, so each read waits (a swap may take the
    // element found away before its text is read).
    browser.wait_text("#schedule-tick .pill", "the every-second run ok", |t| {
        t == "ok"
    });
    browser.wait_text("#schedule-broken .pill", "the failed run", |t| {
        t == "failed"
    });
    let error = browser.wait_text("#schedule-broken .error-text", "its error", |t| {
        t.contains("HTTP 500")
    });
    browser.wait_texts(
        "#schedules tbody tr.failed",
        "only the failed row marked",
        |rows| matches!(rows, [row] if row.starts_with("broken")),
    );
    browser.wait_text("#schedule-tick", "the tick row", |t| {
        ["webhook", "every 1s", "—"].iter().all(|w| t.contains(w))
    });
    assert_eq!(
        browser.path(),
        "/admin/ui/schedules",
        "no reload, no navigation"
    );
    let listed = app.admin("GET", "/admin/schedules", None).json;
    assert_eq!(listed["data"][0]["name"], "broken", "{listed}");
    assert_eq!(
        listed["data"][0]["last_run"]["error"],
        error.as_str(),
        "{listed}"
    );

    // The failed schedule's page: its one run, failed with the error, marked.
    browser.click("#schedule-broken a");
    browser.wait_path("the broken schedule's page", |p| {
        p == "/admin/ui/schedules/broken"
    });
    assert_eq!(browser.text("header nav a.active").unwrap(), "Schedules");
    browser.wait_text("#schedule-fields", "its timing", |t| t.contains("at "));
    browser.wait_texts(
        "#runs tbody tr.failed",
        "its one run, failed",
        |runs| matches!(runs, [run] if run.contains("failed") && run.contains("HTTP 500")),
    );
    let runs = browser.wait_texts("#runs tbody tr", "its runs", |_| true);
    assert_eq!(runs.len(), 1, "an `at` schedule runs once: {runs:?}");

    // The every-second one's page fills with runs while it is open, newest first.
    browser.goto("/admin/ui/schedules");
    browser.click("#schedule-tick a");
    browser.wait_path("the tick schedule's page", |p| {
        p == "/admin/ui/schedules/tick"
    });
    let due = browser.wait_texts(
        "#runs tbody tr td:first-child",
        "three runs of tick",
        |due| due.len() >= 3,
    );
    assert!(due.windows(2).all(|w| w[0] > w[1]), "newest first: {due:?}");
    assert_eq!(browser.path(), "/admin/ui/schedules/tick");
    assert!(!ok.requests().is_empty());
}
on_both_backends_of!(schedules_show_their_latest_runs_and_failures);

/// Over plain HTTP: the schedules pages and their live parts send a browser without a session
/// to sign in; without `[[schedules]]` the page says where schedules come from; a name no
/// schedule has is the 404 page.
fn schedules_pages_need_the_session_and_a_configured_name(backend: Backend) {
    let Some(app) = TestApp::spawn_if_available(backend) else {
        return;
    };
    let pages = [
        "/admin/ui/schedules",
        "/admin/ui/schedules/nightly",
        "/admin/ui/live/schedules",
        "/admin/ui/live/schedules/nightly",
    ];
    for path in pages {
        assert_sent_to_sign_in(
            &app.not_following_redirects()
                .request("GET", path, &[], None),
        );
    }
    let (cookie, _) = http_session(&app);
    let page = with_cookie(&app, "GET", "/admin/ui/schedules", &cookie, None);
    assert_html(&page, 200);
    for wanted in [
        r#"id="no-schedules""#,
        "No schedules are configured",
        "[[schedules]]",
        "“Schedules”",
        r#"<a href="/admin/ui/schedules" class="active">Schedules</a>"#,
    ] {
        assert!(page.text.contains(wanted), "{wanted:?} in {}", page.text);
    }
    assert!(
        !page.text.contains("hx-get"),
        "nothing to refresh: {}",
        page.text
    );
    for path in [pages[1], pages[3]] {
        let missing = with_cookie(&app, "GET", path, &cookie, None);
        assert_html(&missing, 404);
        assert!(
            missing
                .text
                .contains("no schedule named &#34;nightly&#34; is configured"),
            "{}",
            missing.text
        );
    }
    assert_html(
        &with_cookie(&app, "GET", "/admin/ui/schedules/a%20b", &cookie, None),
        404,
    );
    assert_html(
        &with_cookie(&app, "POST", "/admin/ui/schedules", &cookie, None),
        405,
    );
}
on_both_backends_of!(schedules_pages_need_the_session_and_a_configured_name);

on_both_backends! {
    /// Over plain HTTP: the cookie's attributes, `Secure` behind https, and a session refused
    /// and deleted once its `admin.session_ttl_secs` has passed; in a browser (when there is
    /// one), an open page going to sign-in by itself.
    fn the_session_cookie_is_strict_and_expires(app) with [("admin.session_ttl_secs", "4")] {
        let http = app.not_following_redirects();
        let form = format!("token={ADMIN_TOKEN}");
        let form_type = ("Content-Type", "application/x-www-form-urlencoded");
        let login = http.request("POST", "/admin/ui/login", &[form_type], Some(form.as_bytes()));
        assert_eq!(login.status, 303, "{}", login.text);
        assert_eq!(login.header("Location"), Some("/admin/ui"));
        let set_cookie = login.header("Set-Cookie").expect("a session cookie").to_string();
        let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
        let value = attributes[0].strip_prefix(&format!("{COOKIE}=")).expect("the cookie");
        for wanted in ["HttpOnly", "SameSite=Strict", "Path=/admin/ui", "Max-Age=4"] {
            assert!(attributes.contains(&wanted), "{wanted} in {set_cookie}");
        }
        assert!(!attributes.contains(&"Secure"), "plain http: {set_cookie}");
        assert_eq!(stored_sessions(app), vec![sha256_hex(value)]);
        assert_html(&with_cookie(app, "GET", "/admin/ui", value, None), 200);

        // Behind a TLS-terminating proxy the cookie is Secure.
        let https = http.request("POST", "/admin/ui/login",
            &[form_type, ("X-Forwarded-Proto", "https")], Some(form.as_bytes()));
        assert!(https.header("Set-Cookie").is_some_and(|c| c.split(';').any(|a| a.trim() == "Secure")),
            "{:?}", https.headers);

        wait_for("the session to expire", Duration::from_secs(10), || {
            let resp = with_cookie(app, "GET", "/admin/ui", value, None);
            if resp.status == 303 { Ok(()) } else { Err(format!("status {}", resp.status)) }
        });
        assert_sent_to_sign_in(&with_cookie(app, "GET", "/admin/ui/orders", value, None));
        assert!(!stored_sessions(app).contains(&sha256_hex(value)), "the expired session is deleted");
        // In a browser, a page left open past the expiry is sent to sign in by its own
        // refresh (the live part's poll gets the sign-in page, which redirects the page).
        if let Some(driver) = chromedriver() {
            let browser = Browser::open(&driver, &app.base);
            browser.sign_in(ADMIN_TOKEN);
            browser.wait_path("the overview", |p| p == "/admin/ui");
            browser.wait_path("the open overview to go to sign-in once expired",
                |p| p == "/admin/ui/login");
            assert!(browser.text("#token").is_ok(), "the sign-in form");
        }
        // A cookie the engine never issued is refused alike.
        assert_sent_to_sign_in(&with_cookie(app, "GET", "/admin/ui", &"a".repeat(64), None));
        assert_sent_to_sign_in(&with_cookie(app, "GET", "/admin/ui", "garbage", None));
    }
}

/// Writes `docs/dashboard-overview.png` and `docs/dashboard-order.png` from a demo: a
/// catalog, paid, cancelled and pending orders whose deadlines spread over the next ten
/// minutes, and a dead letter. Run it with
/// `TEST_CHROMEDRIVER=/usr/bin/chromedriver cargo test --test api dashboard::screenshots -- --ignored`.
#[test]
#[ignore = "writes the README's screenshots"]
fn screenshots() {
    let driver = std::env::var("TEST_CHROMEDRIVER").expect("TEST_CHROMEDRIVER");
    let first = TestApp::spawn_with(
        Backend::Sqlite,
        &[("effects.max_attempts", "1"), ("cluster.node_id", "demo-a")],
    )
    .expect("SQLite");
    let titles = [
        ("Rust in Practice", 4_900),
        ("Distributed Systems", 7_900),
        ("SQL Performance", 3_900),
        ("Type-Driven Design", 5_900),
    ];
    let courses: Vec<i64> = titles
        .iter()
        .map(|(title, price)| app_course(&first, title, *price))
        .collect();
    let mut pending = Vec::new();
    let mut shown = None;
    for i in 0..24 {
        let (_, token) = first.user_with_token(500);
        let course = courses[i % courses.len()];
        let extra = courses[(i + 1) % courses.len()];
        let items = if i % 3 == 0 {
            vec![course, extra]
        } else {
            vec![course]
        };
        let order = first.place_ok(&token, &items, None, if i % 4 == 0 { 200 } else { 0 });
        match i % 6 {
            0 | 1 => {
                first.pay(&order);
            }
            2 => {
                first
                    .as_user(
                        &token,
                        "POST",
                        &format!("/api/orders/{}/cancel", no(&order)),
                        None,
                    )
                    .assert_status(200);
            }
            _ => pending.push(no(&order).to_string()),
        }
        if i == 4 {
            shown = Some(no(&order).to_string());
        }
    }
    // One grant that fails for good.
    let mut conn = first.db();
    reject_grants(&mut conn);
    let (_, token) = first.user_with_token(0);
    let failing = first.place_ok(&token, &[courses[1]], None, 0);
    first.pay(&failing);
    wait_for("a dead letter", Duration::from_secs(30), || {
        let list = first
            .admin("GET", "/admin/effects?status=dead_lettered", None)
            .json;
        if list["data"].as_array().is_some_and(|l| !l.is_empty()) {
            Ok(())
        } else {
            Err(list.to_string())
        }
    });
    allow_grants(&mut conn);
    // Spread the pending orders' deadlines over the next ten minutes, then start a second
    // engine on the same database: it recovers each order's actor from its stored deadline.
    let now = chrono::Utc::now().naive_utc();
    for (i, order_no) in pending.iter().enumerate() {
        use order_engine::db::schema::orders;
        let secs = [20, 45, 70, 100, 130, 160, 200, 250, 290, 340, 400, 460][i % 12] + i as i64;
        diesel::update(orders::table.find(order_no))
            .set(orders::expires_at.eq(At(now + chrono::TimeDelta::seconds(secs))))
            .execute(&mut conn)
            .expect("move a deadline");
    }
    let url = match first.database_url() {
        order_engine::config::DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        other => panic!("{other:?}"),
    };
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("database.url", &url), ("cluster.node_id", "demo-b")],
    )
    .expect("the second engine");

    let browser = Browser::open(&driver, &app.base);
    browser.sign_in(ADMIN_TOKEN);
    browser.wait_path("the overview", |p| p == "/admin/ui");
    browser.wait_text("#live-actors", "the recovered actors", |t| {
        t == pending.len().to_string()
    });
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).expect("docs/");
    browser.screenshot(&docs.join("dashboard-overview.png"));
    let shown = shown.expect("an order to show");
    browser.goto(&format!("/admin/ui/orders/{shown}"));
    browser.wait_text("#time-left", "the time left", |t| !t.is_empty());
    browser.screenshot(&docs.join("dashboard-order.png"));
}

fn app_course(app: &TestApp, title: &str, price_cents: i64) -> i64 {
    app.create_course(title, price_cents, &["Introduction", "Practice"])["id"]
        .as_i64()
        .expect("course id")
}
