//! A fresh database per run and the engine as a child process.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use order_engine::config::DatabaseUrl;
use order_engine::db::{self, ConnectionManager, DbConnection};

use crate::Backend;

/// The run's database: a temporary SQLite file, or `bench_<random>` on the PostgreSQL or MySQL
/// server; removed when dropped.
pub struct Database {
    /// What the engine's `database.url` is set to.
    pub url: String,
    /// For a server: its maintenance URL and the database's name.
    server: Option<Server>,
    dir: PathBuf,
    keep: bool,
}

struct Server {
    backend: Backend,
    admin_url: String,
    name: String,
}

impl Server {
    /// A connection to the maintenance database, through the engine's own connection code (so
    /// MySQL needs no driver of loadgen's own).
    fn admin(&self) -> Result<DbConnection, String> {
        let url =
            DatabaseUrl::parse(&self.admin_url).map_err(|e| format!("{}: {e}", self.admin_url))?;
        ConnectionManager::new(url)
            .establish()
            .map_err(|e| format!("connecting to {}: {e}", self.admin_url))
    }
}

impl Database {
    /// `pg_settings` (`KEY=VALUE`, PostgreSQL only) are set for the connecting role in the new
    /// database (`ALTER ROLE CURRENT_USER IN DATABASE .. SET`, which wins over role-wide and
    /// database-wide settings) before the engine connects (e.g. `log_min_duration_statement=0`
    /// for profiling).
    pub fn create(
        backend: Backend,
        server_url: &str,
        keep: bool,
        pg_settings: &[String],
    ) -> Result<Self, String> {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = std::env::temp_dir().join(format!("loadgen-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if backend == Backend::Sqlite {
            return Ok(Self {
                url: format!("sqlite://{}", dir.join("engine.db").display()),
                server: None,
                dir,
                keep,
            });
        }
        if backend == Backend::Mysql && !pg_settings.is_empty() {
            return Err("--pg-set applies to PostgreSQL only".into());
        }
        let server = Server {
            backend,
            admin_url: server_url.to_string(),
            name: format!("bench_{tag}"),
        };
        let name = &server.name;
        let mut admin = server.admin()?;
        let create = match backend {
            // As the tests create theirs (SPEC "Backends": utf8mb4, byte-exact keys).
            Backend::Mysql => {
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            }
            _ => format!("CREATE DATABASE {name}"),
        };
        admin
            .batch_execute(&create)
            .map_err(|e| format!("{create}: {e}"))?;
        for setting in pg_settings {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("--pg-set {setting}: expected KEY=VALUE"))?;
            let value = value.replace('\'', "''");
            admin
                .batch_execute(&format!(
                    "ALTER ROLE CURRENT_USER IN DATABASE {name} SET {key} = '{value}'"
                ))
                .map_err(|e| format!("--pg-set {setting}: {e}"))?;
        }
        let (base, query) = match server_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (server_url, String::new()),
        };
        let base = base
            .rsplit_once('/')
            .map(|(b, _)| b)
            .ok_or("the server URL has no database part")?;
        Ok(Self {
            url: format!("{base}/{name}{query}"),
            server: Some(server),
            dir,
            keep,
        })
    }

    /// The database's name on its server (none for SQLite).
    pub fn server_name(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.name.as_str())
    }

    /// The folder for this run's logs (and the SQLite file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A direct connection with the engine's schema migrated (for seeding).
    pub fn connect(&self) -> Result<DbConnection, String> {
        let url = DatabaseUrl::parse(&self.url)?;
        let mut conn = ConnectionManager::new(url)
            .establish()
            .map_err(|e| format!("connecting to {}: {e}", self.url))?;
        db::migrate(&mut conn).map_err(|e| e.to_string())?;
        Ok(conn)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("keeping the database {} (--keep)", self.url);
            return;
        }
        if let Some(server) = &self.server {
            let name = &server.name;
            let drop = match server.backend {
                Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS {name}"),
            };
            match server.admin() {
                Ok(mut admin) => {
                    if let Err(e) = admin.batch_execute(&drop) {
                        eprintln!("could not drop {name}: {e}");
                    }
                }
                Err(e) => eprintln!("could not drop {name}: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Settings the engine is started with (as `ORDER_ENGINE__*` variables).
pub struct EngineConfig {
    pub admin_token: String,
    pub jwt_secret: String,
    pub payment_secret: String,
    pub payment_timeout_secs: u64,
    pub rust_log: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

/// The engine as a child process; killed when dropped.
pub struct Engine {
    child: Child,
    pub port: u16,
    pub started: Instant,
    pub log: PathBuf,
}

/// `--engine`, else `order-engine` next to this executable.
pub fn engine_binary(flag: Option<&Path>) -> Result<PathBuf, String> {
    let path = match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| format!("current_exe: {e}"))?
            .with_file_name("order-engine"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "engine binary {} not found: run `cargo build --release` at the repository root (both binaries) or pass --engine",
            path.display()
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

impl Engine {
    pub fn spawn(
        bin: &Path,
        db: &Database,
        cfg: &EngineConfig,
        label: &str,
    ) -> Result<Self, String> {
        let port = free_port()?;
        let log = db.dir().join(format!("engine-{label}.log"));
        let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("ORDER_ENGINE__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("ORDER_ENGINE__DATABASE__URL", &db.url)
            .env("ORDER_ENGINE__REDIS__URL", "")
            .env("ORDER_ENGINE__ADMIN__TOKEN", &cfg.admin_token)
            .env("ORDER_ENGINE__AUTH__JWT_SECRET", &cfg.jwt_secret)
            .env("ORDER_ENGINE__PAYMENT__SECRET", &cfg.payment_secret)
            .env(
                "ORDER_ENGINE__ORDERS__PAYMENT_TIMEOUT_SECS",
                cfg.payment_timeout_secs.to_string(),
            )
            .env(
                "ORDER_ENGINE__LIMITS__ORDERS_PER_USER_PER_MINUTE",
                "1000000",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        match &cfg.rust_log {
            Some(level) => {
                cmd.env("RUST_LOG", level);
            }
            None => {
                cmd.env_remove("RUST_LOG");
            }
        }
        for (k, v) in &cfg.extra_env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(Self {
            child,
            port,
            started,
            log,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `GET /healthz` answers 200; fails if the process exits first.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let url = format!("{}/healthz", self.base_url());
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the engine exited with {status} before it was healthy:\n{}",
                    self.log_tail()
                ));
            }
            if agent.get(&url).call().is_ok() {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > timeout {
                return Err(format!(
                    "the engine was not healthy within {timeout:?}; see {}",
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the engine's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Resident set size of the engine process, in bytes (`VmRSS` of /proc/PID/status).
    pub fn rss_bytes(&self) -> Result<u64, String> {
        proc_rss_bytes(self.pid())
    }

    /// CPU time (user + system) the engine has used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid()).unwrap_or(f64::NAN)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn proc_rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| "no VmRSS line".to_string())
}

/// utime + stime of a process, in seconds (clock ticks of 100 Hz, as on Linux by default).
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds the database server has spent for this run: for PostgreSQL, the backends serving
/// database `db` (their command line, `postgres: USER DB HOST(PORT) ...`, names it; other
/// databases' backends on the shared server are not counted); for MySQL, the whole server
/// process (`mariadbd` or `mysqld`: one process, whose threads cannot be told apart by
/// database). NaN for SQLite, which runs inside the engine.
pub fn server_cpu_secs(backend: Backend, db: Option<&str>) -> f64 {
    let Some(db) = db else {
        return f64::NAN;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| match backend {
            Backend::Postgres => std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with("postgres:") && c.split_whitespace().any(|w| w == db)
                })
                .unwrap_or(false),
            Backend::Mysql => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| matches!(c.trim(), "mariadbd" | "mysqld"))
                .unwrap_or(false),
            Backend::Sqlite => false,
        })
        .filter_map(proc_cpu_secs)
        .sum()
}
