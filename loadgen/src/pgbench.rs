//! PostgreSQL's own limit for a placement: `pgbench` running `bench/place.sql` (the statements
//! the engine runs for one placement, in its transaction) at the same concurrency.

use std::path::Path;
use std::process::Command;

use crate::stats::{dist, Dist};

pub const SCRIPT: &str = include_str!("../../bench/place.sql");

pub struct PgbenchRun {
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    pub latency: Option<Dist>,
    pub command: String,
}

pub struct PgbenchArgs<'a> {
    pub url: &'a str,
    pub clients: usize,
    pub threads: usize,
    pub secs: u64,
    pub users: i64,
    pub courses: i64,
    pub points: i64,
    pub dir: &'a Path,
}

pub fn run(a: &PgbenchArgs) -> Result<PgbenchRun, String> {
    let script = a.dir.join("place.sql");
    std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    let log_dir = a.dir.join("pgbench-log");
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
    let prefix = log_dir.join("tx");
    let args: Vec<String> = vec![
        "-n".into(),
        "-M".into(),
        "prepared".into(),
        "-c".into(),
        a.clients.to_string(),
        "-j".into(),
        a.threads.to_string(),
        "-T".into(),
        a.secs.to_string(),
        "-D".into(),
        format!("users={}", a.users),
        "-D".into(),
        format!("courses={}", a.courses),
        "-D".into(),
        format!("clients={}", a.clients),
        "-D".into(),
        format!("points={}", a.points),
        "-D".into(),
        "pending=pending".into(),
        "-D".into(),
        "paid=paid".into(),
        "-D".into(),
        "spend=spend".into(),
        "-l".into(),
        format!("--log-prefix={}", prefix.display()),
        "-f".into(),
        script.display().to_string(),
        a.url.to_string(),
    ];
    let command = format!("pgbench {}", args.join(" "));
    let stdout = stdout_of("pgbench", &args, &command)?;
    let field = |key: &str| -> Option<f64> {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let tps = field("tps = ").ok_or_else(|| format!("no tps in pgbench output:\n{stdout}"))?;
    let transactions = field("number of transactions actually processed:").unwrap_or(0.0) as u64;
    let failed = field("number of failed transactions:").unwrap_or(0.0) as u64;
    // Per-transaction log lines: client_id transaction_no time_us script_no epoch epoch_us.
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&log_dir).map_err(|e| e.to_string())? {
        let text = std::fs::read_to_string(entry.map_err(|e| e.to_string())?.path())
            .map_err(|e| e.to_string())?;
        latencies.extend(text.lines().filter_map(|l| {
            l.split_whitespace()
                .nth(2)?
                .parse::<f64>()
                .ok()
                .map(|us| us / 1000.0)
        }));
    }
    Ok(PgbenchRun {
        tps,
        transactions,
        failed,
        latency: dist(latencies),
        command,
    })
}

/// Runs a benchmark client (`pgbench`, `mysqlslap`) to the end: its standard output, or an
/// error with both outputs when it failed. `command` is how it is shown.
pub fn stdout_of(program: &str, args: &[String], command: &str) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{command} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}
