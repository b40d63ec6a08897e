//! MySQL's own limit for a placement: `mysqlslap` (MariaDB's `mariadb-slap`) replaying
//! `bench/place-mysql.sql` (the statements the engine runs for one placement on MySQL, in its
//! transaction) at the same concurrency: the MySQL counterpart of [`crate::pgbench`].
//!
//! mysqlslap has no client-side variables, so the script's first statement (in place of the
//! pool's `SELECT 1` check-out) picks the user, course and order number into session variables
//! the rest reads; the `:name` placeholders are filled in here. It sends text queries where the
//! engine's Diesel sends prepared statements (mysqlslap has no prepared mode).

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use order_engine::db::DbConnection;

use crate::engine::server_cpu_secs;
use crate::pgbench::stdout_of;
use crate::Backend;

pub const SCRIPT: &str = include_str!("../../bench/place-mysql.sql");

pub struct SlapRun {
    pub tps: f64,
    /// Placements committed (orders the script inserted), counted in the database.
    pub transactions: u64,
    pub secs: f64,
    /// CPU seconds of the MySQL server while mysqlslap ran.
    pub server_cpu: f64,
    pub command: String,
}

pub struct SlapArgs<'a> {
    /// The run's database (`mysql://user:pass@host:port/db`).
    pub url: &'a str,
    pub clients: usize,
    /// Transactions each client runs.
    pub per_client: u64,
    pub users: i64,
    pub courses: i64,
    pub points: i64,
    pub dir: &'a std::path::Path,
}

/// The script with its comments dropped (mysqlslap splits the file at every `;`) and its
/// placeholders filled in; and how many statements one transaction is.
pub fn script(a: &SlapArgs) -> (String, usize) {
    let body: String = SCRIPT
        .lines()
        .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let filled = body
        .replace(":clients", &a.clients.to_string())
        .replace(":users", &a.users.to_string())
        .replace(":courses", &a.courses.to_string())
        .replace(":points", &a.points.to_string());
    let statements = filled.matches(';').count();
    (filled, statements)
}

struct Target {
    user: String,
    password: Option<String>,
    host: String,
    port: String,
    db: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("mysql://")
        .ok_or_else(|| format!("{url}: not a mysql:// URL"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    let (auth, hostdb) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, password) = match auth.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (auth.to_string(), None),
    };
    let (hostport, db) = hostdb
        .split_once('/')
        .ok_or_else(|| format!("{url}: no database"))?;
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    Ok(Target {
        user,
        password,
        host: host.to_string(),
        port: port.to_string(),
        db: db.to_string(),
    })
}

fn slap_orders(conn: &mut DbConnection) -> Result<u64, String> {
    use order_engine::db::schema::orders;
    orders::table
        .filter(orders::owner_node.eq("mysqlslap"))
        .count()
        .get_result::<i64>(conn)
        .map(|n| n as u64)
        .map_err(|e| format!("counting mysqlslap's orders: {e}"))
}

pub fn run(conn: &mut DbConnection, a: &SlapArgs) -> Result<SlapRun, String> {
    let t = parse_url(a.url)?;
    let (text, statements) = script(a);
    let file = a.dir.join("place-mysql.sql");
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    let before = slap_orders(conn)?;
    let mut args: Vec<String> = vec![
        "--protocol=tcp".into(),
        format!("--host={}", t.host),
        format!("--port={}", t.port),
        format!("--user={}", t.user),
    ];
    if let Some(p) = &t.password {
        args.push(format!("--password={p}"));
    }
    args.extend([
        format!("--create-schema={}", t.db),
        "--no-drop".into(),
        // As the engine's every connection (src/db/mysql.rs).
        "--init-command=SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".into(),
        format!("--concurrency={}", a.clients),
        "--iterations=1".into(),
        // The total over all clients; each runs its share, whole transactions.
        format!(
            "--number-of-queries={}",
            a.per_client * statements as u64 * a.clients as u64
        ),
        "--delimiter=;".into(),
        format!("--query={}", file.display()),
    ]);
    let command = format!(
        "mysqlslap {}",
        args.iter()
            .map(|a| if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cpu0 = server_cpu_secs(Backend::Mysql, Some(&t.db));
    let stdout = stdout_of("mysqlslap", &args, &command)?;
    let server_cpu = server_cpu_secs(Backend::Mysql, Some(&t.db)) - cpu0;
    let secs: f64 = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Average number of seconds to run all queries:")
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no time in mysqlslap's output:\n{stdout}"))?;
    let transactions = slap_orders(conn)? - before;
    Ok(SlapRun {
        tps: transactions as f64 / secs,
        transactions,
        secs,
        server_cpu,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_comments_dropped() {
        let a = SlapArgs {
            url: "mysql://root@127.0.0.1:3306/bench_x",
            clients: 64,
            per_client: 10,
            users: 640,
            courses: 32,
            points: 10,
            dir: std::path::Path::new("/tmp"),
        };
        let (text, statements) = script(&a);
        assert!(!text.contains("--"), "{text}");
        for p in [":clients", ":users", ":courses", ":points"] {
            assert!(!text.contains(p), "{p} left in {text}");
        }
        assert!(statements >= 10, "{statements} statements");
        let t = parse_url("mysql://u:p@db:3307/x?ssl-mode=REQUIRED").unwrap();
        assert_eq!(
            (t.user.as_str(), t.password.as_deref(), t.host.as_str()),
            ("u", Some("p"), "db")
        );
        assert_eq!((t.port.as_str(), t.db.as_str()), ("3307", "x"));
    }
}
