//! `loadgen`: the benchmark harness of order-engine (issue 4).
//!
//! It starts the engine (`order-engine` next to this executable) as a child process on a fresh
//! database, drives it over HTTP as clients, the payment provider and admins do, prints a
//! summary (or JSON with `--json`) and checks the SPEC invariants through the admin API.
//!
//! ```sh
//! cargo build --release        # at the repository root: the engine and loadgen
//! target/release/loadgen place --backend postgres
//! ```
//!
//! See BENCHMARKS.md for every scenario and the figures.

mod client;
mod engine;
mod invariants;
mod mixed;
mod mysqlslap;
mod parallel;
mod pgbench;
mod seed;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use client::{Api, Secrets};
use engine::{Database, Engine, EngineConfig};
use invariants::Expect;
use stats::{dist, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// MySQL 8 / MariaDB 10.6+: loadgen and the engine built with the feature `mysql`
    /// (`cargo build --release --features mysql` at the repository root).
    Mysql,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Placement throughput and latency (`--clients` concurrent clients, `--orders`).
    Place,
    /// Callback throughput and latency (orders placed first, then all paid or failed at once).
    Callback,
    /// Timeout lateness: `--orders` pending, deadlines spread over `--spread-secs`.
    Expiry,
    /// `--orders` pending orders sharing one deadline second: time until closed and refunded.
    Burst,
    /// Resident memory per pending order (and the time to re-arm them all at start).
    Memory,
    /// Time from engine start until `--orders` pending orders have live actors and timers.
    Recovery,
    /// Placements, callbacks (successes, failures, duplicates) and timeouts at once: `--orders`
    /// (default 12000) placed by `--clients` on an engine with a `--payment-timeout-secs`
    /// window; placement and callback rates and latencies, timeout lateness, settling.
    Mixed,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator and benchmark harness for order-engine")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Concurrent HTTP clients (one thread and keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Orders (default: place/callback 20000, mixed 12000, expiry/burst/memory 100000,
    /// recovery 1000000).
    #[arg(long)]
    orders: Option<i64>,
    /// Users the orders are spread over (default: 10 per client for place/callback, 1000 for
    /// the seeded scenarios).
    #[arg(long)]
    users: Option<i64>,
    /// PostgreSQL server on which `bench_<random>` is created (and dropped at the end).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// MySQL / MariaDB server on which `bench_<random>` is created (and dropped at the end).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/mysql")]
    mysql_url: String,
    /// The engine binary (default: `order-engine` next to this executable).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// place on PostgreSQL or MySQL: do not replay the placement SQL with pgbench / mysqlslap
    /// after the engine.
    #[arg(long)]
    no_pgbench: bool,
    /// Seconds pgbench runs (mysqlslap runs a fixed number of transactions: about as many as the
    /// engine would place in this time).
    #[arg(long, default_value_t = 20)]
    pgbench_secs: u64,
    /// expiry: deadlines are spread over this many seconds.
    #[arg(long, default_value_t = 60)]
    spread_secs: u64,
    /// expiry/burst: seconds from seeding to the first deadline (the engine must have re-armed
    /// every order by then).
    #[arg(long, default_value_t = 30)]
    lead_secs: u64,
    /// expiry/burst/mixed: give up this many seconds after the last deadline if orders are still
    /// pending or effects unfinished (reported as a violation, lateness as a lower bound).
    #[arg(long, default_value_t = 600)]
    settle_secs: u64,
    /// callback: percentage of callbacks that carry a failure code; mixed: percentage of
    /// orders that get a failure callback.
    #[arg(long, default_value_t = 10)]
    fail_percent: u64,
    /// mixed: percentage of orders that get a success callback (the rest of those without a
    /// failure time out).
    #[arg(long, default_value_t = 50)]
    pay_percent: u64,
    /// mixed: percentage of callbacks the provider sends twice (the second up to 1 s later).
    #[arg(long, default_value_t = 20)]
    duplicate_percent: u64,
    /// mixed: the engine's payment window (`orders.payment_timeout_secs`).
    #[arg(long, default_value_t = 10)]
    payment_timeout_secs: u64,
    /// mixed: concurrent payment-provider clients sending the callbacks.
    #[arg(long, default_value_t = 32)]
    callback_clients: usize,
    /// mixed: a callback is due up to this many milliseconds (uniformly) after its order's 201.
    #[arg(long, default_value_t = 5000)]
    callback_delay_ms: u64,
    /// Skip the end-of-run invariant check.
    #[arg(long)]
    no_check: bool,
    /// PostgreSQL: `KEY=VALUE` set on the run's database before the engine connects
    /// (repeatable), e.g. `--pg-set log_min_duration_statement=0` to log every statement's time.
    #[arg(long = "pg-set")]
    pg_set: Vec<String>,
    /// `KEY=VALUE` set in the engine's environment (repeatable), e.g.
    /// `--engine-env ORDER_ENGINE__DATABASE__POOL_SIZE=32` to try another setting.
    #[arg(long = "engine-env")]
    engine_env: Vec<String>,
    /// Keep the database (and the engine log folder) after the run.
    #[arg(long)]
    keep: bool,
    /// RUST_LOG for the engine (default: the engine's own default, `info`).
    #[arg(long)]
    rust_log: Option<String>,
    /// Seconds to wait, engine up and loaded, before measuring (time to attach a profiler to
    /// the printed pid).
    #[arg(long, default_value_t = 0)]
    pause_secs: u64,
}

struct Ctx {
    args: Args,
    bin: PathBuf,
    secrets: Secrets,
    db: Database,
}

impl Ctx {
    fn start_engine(&self, timeout_secs: u64, label: &str) -> Result<(Engine, Api), String> {
        let cfg = EngineConfig {
            admin_token: self.secrets.admin_token.clone(),
            jwt_secret: self.secrets.jwt_secret.clone(),
            payment_secret: self.secrets.payment_secret.clone(),
            payment_timeout_secs: timeout_secs,
            rust_log: self.args.rust_log.clone(),
            extra_env: self
                .args
                .engine_env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| format!("--engine-env {kv}: expected KEY=VALUE"))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut engine = Engine::spawn(&self.bin, &self.db, &cfg, label)?;
        eprintln!(
            "engine pid {} on {} (log {})",
            engine.pid(),
            engine.base_url(),
            engine.log.display()
        );
        engine.wait_healthy(Duration::from_secs(600))?;
        let api = Api::new(&engine.base_url(), self.secrets.clone());
        Ok((engine, api))
    }

    fn pause(&self) {
        if self.args.pause_secs > 0 {
            eprintln!("pausing {} s (--pause-secs)", self.args.pause_secs);
            std::thread::sleep(Duration::from_secs(self.args.pause_secs));
        }
    }

    fn orders(&self) -> i64 {
        self.args.orders.unwrap_or(match self.args.scenario {
            Scenario::Place | Scenario::Callback => 20_000,
            Scenario::Mixed => 12_000,
            Scenario::Recovery => 1_000_000,
            _ => 100_000,
        })
    }
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    pb.set_message(msg.to_string());
    pb
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json_out = args.json;
    match run(args) {
        Ok(report) => {
            if json_out {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.table());
            }
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<Report, String> {
    let bin = engine::engine_binary(args.engine.as_deref())?;
    let server_url = match args.backend {
        Backend::Mysql => &args.mysql_url,
        _ => &args.pg_url,
    };
    let db = Database::create(args.backend, server_url, args.keep, &args.pg_set)?;
    let ctx = Ctx {
        args,
        bin,
        secrets: Secrets::random(),
        db,
    };
    let _ = SERVER_DB.set((ctx.args.backend, ctx.db.server_name().map(str::to_string)));
    let load_before = loadavg();
    let mut report = match ctx.args.scenario {
        Scenario::Place => place(&ctx),
        Scenario::Callback => callback(&ctx),
        Scenario::Expiry => timeouts(&ctx, false),
        Scenario::Burst => timeouts(&ctx, true),
        Scenario::Memory => memory(&ctx, true),
        Scenario::Recovery => memory(&ctx, false),
        Scenario::Mixed => mixed::mixed(&ctx),
    }?;
    if !ctx.args.engine_env.is_empty() {
        report.note(format!(
            "engine environment: {}",
            ctx.args.engine_env.join(" ")
        ));
    }
    // The machine is shared: say how busy it was (1-minute load average, 2 cores).
    report.note(format!(
        "load average at start {load_before}, at end {}",
        loadavg()
    ));
    Ok(report)
}

/// The run's database on its server, whose CPU time is reported.
static SERVER_DB: std::sync::OnceLock<(Backend, Option<String>)> = std::sync::OnceLock::new();

/// CPU seconds the database server has spent so far (NaN for SQLite).
fn db_cpu() -> f64 {
    match SERVER_DB.get() {
        Some((backend, name)) => engine::server_cpu_secs(*backend, name.as_deref()),
        None => f64::NAN,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------------
// Catalog through the admin API, and placements from many clients.

struct Catalog {
    users: Vec<i64>,
    tokens: Vec<String>,
    courses: Vec<(i64, i64)>,
    /// Per user, their unused user coupons.
    coupons: Vec<Vec<i64>>,
}

const PLACE_POINTS: i64 = 10;
/// callback and mixed: a user's every fourth order uses one of their coupons.
const COUPON_EVERY: usize = 4;

fn create_catalog(
    api: &Api,
    threads: usize,
    users: usize,
    courses: usize,
    coupons_per_user: usize,
) -> Result<Catalog, String> {
    let pb = bar(
        (users + courses + users * coupons_per_user) as u64,
        "catalog",
    );
    let made: Vec<Result<(i64, i64), String>> = parallel::map(threads, courses, |i| {
        let price = 1000 + 10 * (i as i64 % 50);
        let c = api.admin_create(
            "/admin/courses",
            &json!({"title": format!("course {i}"), "price_cents": price, "on_sale": true,
                    "chapters": ["introduction", "practice", "exam"]}),
        )?;
        pb.inc(1);
        Ok((c["id"].as_i64().ok_or("course without id")?, price))
    });
    let courses = made.into_iter().collect::<Result<Vec<_>, _>>()?;
    let coupon = if coupons_per_user > 0 {
        let c = api.admin_create(
            "/admin/coupons",
            &json!({"title": "100 off", "discount_cents": 100, "min_spend_cents": 500,
                    "valid_until": null}),
        )?;
        c["id"].as_i64()
    } else {
        None
    };
    let made: Vec<Result<(i64, Vec<i64>), String>> = parallel::map(threads, users, |i| {
        let u = api.admin_create(
            "/admin/users",
            &json!({"name": format!("user {i}"), "points": seed::INITIAL_POINTS}),
        )?;
        let id = u["id"].as_i64().ok_or("user without id")?;
        pb.inc(1);
        let mut mine = Vec::new();
        for _ in 0..coupons_per_user {
            let uc = api.admin_create(
                &format!("/admin/users/{id}/coupons"),
                &json!({"coupon_id": coupon}),
            )?;
            mine.push(uc["user_coupon_id"].as_i64().ok_or("no user_coupon_id")?);
            pb.inc(1);
        }
        Ok((id, mine))
    });
    pb.finish_and_clear();
    let made = made.into_iter().collect::<Result<Vec<_>, _>>()?;
    let tokens = made.iter().map(|(id, _)| api.token(*id)).collect();
    let (users, coupons) = made.into_iter().unzip();
    Ok(Catalog {
        users,
        tokens,
        courses,
        coupons,
    })
}

struct Placed {
    /// The placement's index `i` (user `i % U`, course `i / U`).
    index: usize,
    order_no: String,
    payable: i64,
    /// `expires_at` of the 201 answer, unix milliseconds.
    expires_ms: i64,
    latency_ms: f64,
    /// When the answer came, since the first placement was sent.
    done_at: Duration,
}

struct Placements {
    orders: Vec<Placed>,
    errors: Vec<String>,
    /// When the first placement was sent.
    started: Instant,
    wall: Duration,
    engine_cpu: f64,
    db_cpu: f64,
}

impl Placements {
    /// Adds the placement figures every scenario reports: how many, the rate over the whole
    /// phase, and the latency distribution.
    fn report(&self, r: &mut Report) {
        let wall = self.wall.as_secs_f64();
        r.add("orders_placed", self.orders.len() as f64, "");
        r.add(
            "place_throughput",
            self.orders.len() as f64 / wall,
            "orders/s",
        );
        r.add_dist(
            "place_latency",
            dist(self.latencies_from(Duration::ZERO)),
            "ms",
        );
    }

    /// Latencies of the placements answered at or after `from` (since the first was sent).
    fn latencies_from(&self, from: Duration) -> Vec<f64> {
        self.orders
            .iter()
            .filter(|o| o.done_at >= from)
            .map(|o| o.latency_ms)
            .collect()
    }
}

/// Places `n` orders: order `i` is user `i % U` buying course `i / U`, so each (user, course)
/// pair is placed once and no pending orders of one user share a course. Each client thread
/// owns a set of users, so one user's placements never race each other. With `coupon_every`,
/// a user's k-th order uses a coupon when `k % coupon_every == 0`. `on_placed` is called on
/// the client's thread after each 201 (the mixed scenario schedules its callbacks there).
fn place_all(
    api: &Api,
    engine: &Engine,
    cat: &Catalog,
    clients: usize,
    n: usize,
    coupon_every: Option<usize>,
    on_placed: &(dyn Fn(&Placed) + Sync),
) -> Placements {
    let users = cat.users.len();
    let pb = bar(n as u64, "place");
    let cpu0 = (engine.cpu_secs(), db_cpu());
    let start = Instant::now();
    let parts = parallel::each(clients, |t| {
        let mut orders = Vec::new();
        let mut errors = Vec::new();
        for i in (0..n).filter(|i| (i % users) % clients == t) {
            let (u, k) = (i % users, i / users);
            let coupon = coupon_every
                .filter(|e| k % e == 0)
                .and_then(|e| cat.coupons[u].get(k / e).copied());
            let t0 = Instant::now();
            let answer = api.place(&cat.tokens[u], &[cat.courses[k].0], coupon, PLACE_POINTS);
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            match answer {
                Ok((201, body)) => {
                    let placed = Placed {
                        index: i,
                        order_no: body["order_no"].as_str().unwrap_or_default().to_string(),
                        payable: body["payable_cents"].as_i64().unwrap_or(0),
                        expires_ms: invariants::ts_ms(&body["expires_at"]).unwrap_or(i64::MAX),
                        latency_ms: ms,
                        done_at: start.elapsed(),
                    };
                    on_placed(&placed);
                    orders.push(placed);
                }
                Ok((status, body)) => errors.push(format!("POST /api/orders: {status} {body}")),
                Err(e) => errors.push(format!("POST /api/orders: {e}")),
            }
            pb.inc(1);
        }
        (orders, errors)
    });
    let wall = start.elapsed();
    let engine_cpu = engine.cpu_secs() - cpu0.0;
    let db_cpu = db_cpu() - cpu0.1;
    pb.finish_and_clear();
    let mut out = Placements {
        orders: Vec::new(),
        errors: Vec::new(),
        started: start,
        wall,
        engine_cpu,
        db_cpu,
    };
    for (o, e) in parts {
        out.orders.extend(o);
        out.errors.extend(e);
    }
    out
}

fn add_cpu(
    r: &mut Report,
    prefix: &str,
    engine_cpu: f64,
    db_cpu: f64,
    wall: f64,
    backend: Backend,
) {
    r.add(
        &format!("{prefix}_engine_cpu"),
        engine_cpu / wall * 100.0,
        "% of one core",
    );
    // The whole MariaDB server on MySQL (one process), this database's backends on PostgreSQL.
    let server = match backend {
        Backend::Sqlite => return,
        Backend::Postgres => "postgres",
        Backend::Mysql => "mariadb",
    };
    r.add(
        &format!("{prefix}_{server}_cpu"),
        db_cpu / wall * 100.0,
        "% of one core",
    );
}

fn record_errors(r: &mut Report, what: &str, errors: &[String]) {
    if !errors.is_empty() {
        r.add(&format!("{what}_errors"), errors.len() as f64, "");
        for e in errors.iter().take(5) {
            r.note(format!("{what}: {e}"));
        }
        r.violations
            .push(format!("{} {what} requests failed", errors.len()));
    }
}

fn check_into(ctx: &Ctx, r: &mut Report, api: &Api, expect: &Expect) -> Result<Vec<Value>, String> {
    if ctx.args.no_check {
        r.note("invariant check skipped (--no-check)");
        return Ok(Vec::new());
    }
    let t = Instant::now();
    let (violations, orders) = invariants::check(api, ctx.args.clients, expect)?;
    r.note(format!(
        "invariants checked over {} orders in {:.1} s",
        orders.len(),
        t.elapsed().as_secs_f64()
    ));
    r.violations.extend(violations);
    Ok(orders)
}

fn place_catalog_sizes(ctx: &Ctx, n: i64) -> (usize, usize) {
    let users = ctx
        .args
        .users
        .unwrap_or(ctx.args.clients as i64 * 10)
        .max(1) as usize;
    let courses = (n as usize).div_ceil(users);
    (users, courses.max(1))
}

fn place(ctx: &Ctx) -> Result<Report, String> {
    let n = ctx.orders();
    let mut r = Report::new("place", ctx.args.backend.name());
    let (engine, api) = ctx.start_engine(3600, "place")?;
    let (users, courses) = place_catalog_sizes(ctx, n);
    let cat = create_catalog(&api, ctx.args.clients, users, courses, 0)?;
    ctx.pause();
    let p = place_all(
        &api,
        &engine,
        &cat,
        ctx.args.clients,
        n as usize,
        None,
        &|_| {},
    );
    let wall = p.wall.as_secs_f64();
    r.add("clients", ctx.args.clients as f64, "");
    p.report(&mut r);
    add_cpu(
        &mut r,
        "place",
        p.engine_cpu,
        p.db_cpu,
        wall,
        ctx.args.backend,
    );
    record_errors(&mut r, "place", &p.errors);
    let expect = Expect {
        acknowledged: p
            .orders
            .iter()
            .map(|o| (o.order_no.clone(), Some("pending")))
            .collect(),
        all_closed: false,
    };
    check_into(ctx, &mut r, &api, &expect)?;
    drop(engine);

    if !ctx.args.no_pgbench {
        let engine_tps = p.orders.len() as f64 / wall;
        match ctx.args.backend {
            Backend::Postgres => pgbench_beside(ctx, &mut r, engine_tps, users, courses)?,
            Backend::Mysql => mysqlslap_beside(ctx, &mut r, engine_tps, users, courses)?,
            Backend::Sqlite => {}
        }
    }
    Ok(r)
}

/// PostgreSQL's own limit: pgbench on the placement SQL at the same concurrency.
fn pgbench_beside(
    ctx: &Ctx,
    r: &mut Report,
    engine_tps: f64,
    users: usize,
    courses: usize,
) -> Result<(), String> {
    eprintln!("running pgbench for {} s", ctx.args.pgbench_secs);
    let pg = pgbench::run(&pgbench::PgbenchArgs {
        url: &ctx.db.url,
        clients: ctx.args.clients,
        threads: 2,
        secs: ctx.args.pgbench_secs,
        users: users as i64,
        courses: courses as i64,
        points: PLACE_POINTS,
        dir: ctx.db.dir(),
    })?;
    r.add("pgbench_tps", pg.tps, "tx/s");
    r.add_dist("pgbench_latency", pg.latency, "ms");
    if pg.failed > 0 {
        r.note(format!("pgbench: {} failed transactions", pg.failed));
    }
    r.add("engine_vs_pgbench", engine_tps / pg.tps * 100.0, "%");
    r.note(format!(
        "pgbench: {} transactions; {}",
        pg.transactions, pg.command
    ));
    Ok(())
}

/// MySQL's own limit: mysqlslap on the placement SQL at the same concurrency.
fn mysqlslap_beside(
    ctx: &Ctx,
    r: &mut Report,
    engine_tps: f64,
    users: usize,
    courses: usize,
) -> Result<(), String> {
    let per_client =
        ((engine_tps * ctx.args.pgbench_secs as f64) / ctx.args.clients as f64).ceil() as u64;
    eprintln!("running mysqlslap: {per_client} placements per client");
    let mut conn = ctx.db.connect()?;
    let slap = mysqlslap::run(
        &mut conn,
        &mysqlslap::SlapArgs {
            url: &ctx.db.url,
            clients: ctx.args.clients,
            per_client: per_client.max(1),
            users: users as i64,
            courses: courses as i64,
            points: PLACE_POINTS,
            dir: ctx.db.dir(),
        },
    )?;
    r.add("mysqlslap_tps", slap.tps, "tx/s");
    r.add("mysqlslap_secs", slap.secs, "s");
    r.add(
        "mysqlslap_mariadb_cpu",
        slap.server_cpu / slap.secs * 100.0,
        "% of one core",
    );
    r.add("engine_vs_mysqlslap", engine_tps / slap.tps * 100.0, "%");
    r.note(format!(
        "mysqlslap: {} transactions committed; {}",
        slap.transactions, slap.command
    ));
    Ok(())
}

fn callback(ctx: &Ctx) -> Result<Report, String> {
    let n = ctx.orders();
    let mut r = Report::new("callback", ctx.args.backend.name());
    let (engine, api) = ctx.start_engine(3600, "callback")?;
    let (users, courses) = place_catalog_sizes(ctx, n);
    let cat = create_catalog(
        &api,
        ctx.args.clients,
        users,
        courses,
        courses.div_ceil(COUPON_EVERY),
    )?;
    let p = place_all(
        &api,
        &engine,
        &cat,
        ctx.args.clients,
        n as usize,
        Some(COUPON_EVERY),
        &|_| {},
    );
    r.add(
        "place_throughput",
        p.orders.len() as f64 / p.wall.as_secs_f64(),
        "orders/s",
    );
    record_errors(&mut r, "place", &p.errors);
    ctx.pause();

    let pb = bar(p.orders.len() as u64, "callback");
    let next = AtomicUsize::new(0);
    let fail_every = if ctx.args.fail_percent == 0 {
        usize::MAX
    } else {
        (100 / ctx.args.fail_percent.min(100)) as usize
    };
    let cpu0 = (engine.cpu_secs(), db_cpu());
    let start = Instant::now();
    let parts = parallel::each(ctx.args.clients, |_| {
        let (mut lat, mut errs, mut outcome) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(o) = p.orders.get(i) else { break };
            let fail = i % fail_every == fail_every - 1;
            let code = if fail { 100_001 } else { 100_000 };
            let t0 = Instant::now();
            let answer = api.callback(&o.order_no, &format!("t{}", o.order_no), code, o.payable);
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            match answer {
                Ok((200, _)) => {
                    lat.push(ms);
                    outcome.push((o.order_no.clone(), if fail { "failed" } else { "paid" }));
                }
                Ok((s, b)) => errs.push(format!("callback {}: {s} {b}", o.order_no)),
                Err(e) => errs.push(format!("callback {}: {e}", o.order_no)),
            }
            pb.inc(1);
        }
        (lat, errs, outcome)
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = (engine.cpu_secs() - cpu0.0, db_cpu() - cpu0.1);
    pb.finish_and_clear();
    let mut expect = Expect::default();
    for o in &p.orders {
        expect.acknowledged.insert(o.order_no.clone(), None);
    }
    let (mut lat, mut errs) = (Vec::new(), Vec::new());
    for (l, e, outcome) in parts {
        lat.extend(l);
        errs.extend(e);
        for (no, want) in outcome {
            expect.acknowledged.insert(no, Some(want));
        }
    }
    r.add("clients", ctx.args.clients as f64, "");
    r.add("callbacks", lat.len() as f64, "");
    r.add(
        "callback_throughput",
        lat.len() as f64 / wall,
        "callbacks/s",
    );
    r.add_dist("callback_latency", dist(lat), "ms");
    add_cpu(&mut r, "callback", cpu.0, cpu.1, wall, ctx.args.backend);
    record_errors(&mut r, "callback", &errs);
    // Effects (grants, refunds) run after the 200s: time until they are all done.
    let t = Instant::now();
    invariants::settle(&api, Duration::from_secs(600))?;
    r.add(
        "effects_drained_after",
        t.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );
    check_into(ctx, &mut r, &api, &expect)?;
    drop(engine);
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Seeded scenarios: orders inserted straight into the database, then the engine started.

/// Polls `GET /admin/actors` until `live_actors` and `armed_timers` reach `n`; returns the
/// time since the engine's process was spawned.
fn wait_armed(
    engine: &mut Engine,
    api: &Api,
    n: i64,
    pb: &ProgressBar,
) -> Result<Duration, String> {
    loop {
        if !engine.is_running() {
            return Err(format!("the engine died; see {}", engine.log.display()));
        }
        let a = api.actors()?;
        let (live, armed) = (
            a["live_actors"].as_i64().unwrap_or(0),
            a["armed_timers"].as_i64().unwrap_or(0),
        );
        pb.set_position(armed.max(0) as u64);
        if live >= n && armed >= n {
            return Ok(engine.started.elapsed());
        }
        if engine.started.elapsed() > Duration::from_secs(1800) {
            return Err(format!("only {armed}/{n} timers armed after 30 min: {a}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn seed_orders(ctx: &Ctx, s: &seed::Seed) -> Result<Duration, String> {
    let t = Instant::now();
    let mut conn = ctx.db.connect()?;
    seed::run(&mut conn, ctx.args.backend, s)?;
    Ok(t.elapsed())
}

fn timeouts(ctx: &Ctx, burst: bool) -> Result<Report, String> {
    let n = ctx.orders();
    let name = if burst { "burst" } else { "expiry" };
    let mut r = Report::new(name, ctx.args.backend.name());
    let mut s = seed::Seed::new(n, ctx.args.users.unwrap_or(1000));
    s.points = PLACE_POINTS;
    s.first_deadline_ms = now_ms() + ctx.args.lead_secs as i64 * 1000;
    s.spread_ms = if burst {
        1000
    } else {
        ctx.args.spread_secs as i64 * 1000
    };
    let seeded = seed_orders(ctx, &s)?;
    r.add("orders", n as f64, "");
    r.add("deadline_spread", s.spread_ms as f64, "ms");
    r.add("seed_time", seeded.as_secs_f64() * 1000.0, "ms");
    let (mut engine, api) = ctx.start_engine(1800, name)?;
    let pb = bar(n as u64, "re-arm");
    let armed = wait_armed(&mut engine, &api, n, &pb)?;
    pb.finish_and_clear();
    r.add("rearm_time", armed.as_secs_f64() * 1000.0, "ms");
    let slack = s.first_deadline_ms - now_ms();
    if slack < 0 {
        r.violations.push(format!(
            "the first deadline passed {} ms before every timer was armed: raise --lead-secs",
            -slack
        ));
    }
    let first = s.first_deadline_ms;
    let last = first + s.spread_ms;
    // Wait for the first deadline, then watch the pending count fall.
    while now_ms() < first {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu0 = (engine.cpu_secs(), db_cpu());
    let give_up = last + ctx.args.settle_secs as i64 * 1000;
    let settled = watch_settling(ctx, &mut r, &api, n, give_up, burst)?;
    let end = settled.settled_at.unwrap_or_else(now_ms);
    let wall = (end - first) as f64 / 1000.0;
    let cpu = (engine.cpu_secs() - cpu0.0, db_cpu() - cpu0.1);
    add_cpu(
        &mut r,
        name,
        cpu.0,
        cpu.1,
        wall.max(0.001),
        ctx.args.backend,
    );
    let from = if burst { first } else { last };
    let after = if burst {
        "after_first_deadline"
    } else {
        "after_last_deadline"
    };
    if let Some(closed) = settled.closed_at {
        r.add(&format!("all_closed_{after}"), (closed - from) as f64, "ms");
    }
    if let Some(refunded) = settled.settled_at {
        r.add(
            &format!("all_refunded_{after}"),
            (refunded - from) as f64,
            "ms",
        );
    }
    let expect = Expect {
        acknowledged: Default::default(),
        all_closed: true,
    };
    let orders = closed_orders(ctx, &mut r, &api, &expect, &settled)?;
    let lateness = timeout_lateness(&mut r, &orders, true);
    r.add_dist("lateness", dist(lateness), "ms");
    Ok(r)
}

/// When every order had left `pending` and every effect was done (unix ms), or how many
/// orders were still pending when [`watch_settling`] gave up.
struct Settling {
    closed_at: Option<i64>,
    settled_at: Option<i64>,
    still_pending: i64,
}

/// Polls until no order and no effect is pending, or until `give_up_ms` (a violation). `fast`
/// polls every 50 ms (a burst settles in seconds), else every 250 ms.
fn watch_settling(
    ctx: &Ctx,
    r: &mut Report,
    api: &Api,
    n: i64,
    give_up_ms: i64,
    fast: bool,
) -> Result<Settling, String> {
    let pb = bar(n as u64, "closed");
    let mut out = Settling {
        closed_at: None,
        settled_at: None,
        still_pending: 0,
    };
    let mut polls: u64 = 0;
    loop {
        // Completion from two cheap one-row pages; the counts of `/admin/actors` (a scan of
        // every order) only once a second, for the progress bar.
        let (orders_left, effects_left) = api.anything_pending()?;
        let t = now_ms();
        if !orders_left {
            pb.set_position(n as u64);
        } else if polls.is_multiple_of(if fast { 20 } else { 4 }) {
            let a = api.actors()?;
            let pending = a["orders_by_status"]["pending"].as_i64().unwrap_or(-1);
            pb.set_position((n - pending).max(0) as u64);
        }
        polls += 1;
        if !orders_left && out.closed_at.is_none() {
            out.closed_at = Some(t);
        }
        if !orders_left && !effects_left {
            out.settled_at = Some(t);
            break;
        }
        if t > give_up_ms {
            let a = api.actors()?;
            let pending = a["orders_by_status"]["pending"].as_i64().unwrap_or(-1);
            let effects = a["effects"]["pending"].as_i64().unwrap_or(-1);
            out.still_pending = pending;
            r.violations.push(format!(
                "not settled {} s after the last deadline (--settle-secs): {pending} orders \
                 pending, {effects} effects pending",
                ctx.args.settle_secs
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(if fast { 50 } else { 250 }));
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Every order, through the invariant check when the run settled (and checking is on); else
/// the cancelled orders only, for lateness figures that are then a lower bound.
fn closed_orders(
    ctx: &Ctx,
    r: &mut Report,
    api: &Api,
    expect: &Expect,
    settled: &Settling,
) -> Result<Vec<Value>, String> {
    if !ctx.args.no_check && settled.settled_at.is_some() {
        return check_into(ctx, r, api, expect);
    }
    if settled.settled_at.is_none() {
        r.add("pending_at_give_up", settled.still_pending as f64, "");
        if settled.still_pending > 0 {
            r.note("lateness figures cover only the orders closed before giving up: a lower bound");
        }
    }
    api.admin_list_all("/admin/orders?status=cancelled")
}

/// `closed_at - expires_at` of every order closed by its timeout; an order closed before its
/// deadline is a violation, and so, with `only_timeouts`, is any order that ended otherwise.
fn timeout_lateness(r: &mut Report, orders: &[Value], only_timeouts: bool) -> Vec<f64> {
    let mut lateness = Vec::new();
    for o in orders {
        if o["status"] == "cancelled" && o["close_reason"] == "timeout" {
            if let Some(l) = invariants::lateness_ms(o) {
                if l < 0.0 {
                    r.violations.push(format!(
                        "order {} closed {l} ms before its deadline",
                        o["order_no"]
                    ));
                }
                lateness.push(l);
            }
        } else if only_timeouts {
            r.violations.push(format!(
                "order {} ended {} / {}",
                o["order_no"], o["status"], o["close_reason"]
            ));
        }
    }
    lateness
}
fn memory(ctx: &Ctx, with_baseline: bool) -> Result<Report, String> {
    let n = ctx.orders();
    let name = if with_baseline { "memory" } else { "recovery" };
    let mut r = Report::new(name, ctx.args.backend.name());
    r.add("orders", n as f64, "");
    let baseline = if with_baseline {
        // The same engine with no pending order (schema migrated, nothing to recover).
        let (engine, api) = ctx.start_engine(1800, "baseline")?;
        api.actors()?;
        std::thread::sleep(Duration::from_secs(2));
        let rss = engine.rss_bytes()?;
        r.add("rss_0_pending", rss as f64 / 1024.0 / 1024.0, "MiB");
        Some(rss)
    } else {
        None
    };
    let mut s = seed::Seed::new(n, ctx.args.users.unwrap_or(1000));
    s.first_deadline_ms = now_ms() + 3_600_000;
    s.spread_ms = 600_000;
    let seeded = seed_orders(ctx, &s)?;
    r.add("seed_time", seeded.as_secs_f64() * 1000.0, "ms");
    let (mut engine, api) = ctx.start_engine(1800, name)?;
    let healthy = engine.started.elapsed();
    let pb = bar(n as u64, "re-arm");
    let armed = wait_armed(&mut engine, &api, n, &pb)?;
    pb.finish_and_clear();
    r.add("http_up_after", healthy.as_secs_f64() * 1000.0, "ms");
    r.add("rearm_time", armed.as_secs_f64() * 1000.0, "ms");
    r.add("rearm_engine_cpu", engine.cpu_secs(), "s");
    std::thread::sleep(Duration::from_secs(2));
    let rss = engine.rss_bytes()?;
    r.add("rss_pending", rss as f64 / 1024.0 / 1024.0, "MiB");
    if let Ok(hwm) = proc_hwm_bytes(engine.pid()) {
        r.add("rss_peak", hwm as f64 / 1024.0 / 1024.0, "MiB");
    }
    if let Some(base) = baseline {
        r.add(
            "bytes_per_pending_order",
            (rss as f64 - base as f64) / n as f64,
            "B",
        );
    }
    let a = api.actors()?;
    if a["orders_by_status"]["pending"].as_i64() != Some(n) {
        r.violations
            .push(format!("expected {n} pending orders: {a}"));
    }
    ctx.pause();
    Ok(r)
}

fn proc_hwm_bytes(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|k| k * 1024)
        .ok_or_else(|| "no VmHWM".into())
}
