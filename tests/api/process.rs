//! One engine process (`order-engine serve`, the real binary) for process-level tests:
//! started on a test database with the test secrets, SIGKILLed or SIGTERMed, killed on drop.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::helpers::*;

/// One engine process (`order-engine serve`), killed on drop.
pub struct EngineProcess {
    pub child: Child,
    http: Http,
    log: PathBuf,
}

impl std::ops::Deref for EngineProcess {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl EngineProcess {
    /// Starts the binary on `db` with the test secrets and `settings`, and waits until it
    /// answers `/healthz`.
    pub fn start(db: &TestDatabase, settings: &[(&str, &str)]) -> EngineProcess {
        Self::start_with_file(db, settings, None)
    }

    /// [`EngineProcess::start`] with a settings file (`--config`) holding `file`, for what
    /// only a file can say (`[[schedules]]`).
    pub fn start_with_file(
        db: &TestDatabase,
        settings: &[(&str, &str)],
        file: Option<&str>,
    ) -> EngineProcess {
        let port = free_port();
        let log = db.dir().join(format!("engine-{port}.log"));
        let mut vars = vec![
            ("server.bind", format!("127.0.0.1:{port}")),
            ("server.workers", "2".into()),
            ("database.url", db.url.clone()),
            ("database.pool_size", "4".into()),
            ("admin.token", ADMIN_TOKEN.into()),
            ("auth.jwt_secret", JWT_SECRET.into()),
            ("payment.secret", PAYMENT_SECRET.into()),
        ];
        vars.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
        let mut command = Command::new(env!("CARGO_BIN_EXE_order-engine"));
        if let Some(text) = file {
            let path = db.dir().join(format!("engine-{port}.toml"));
            std::fs::write(&path, text).expect("write the engine's settings file");
            command.arg("--config").arg(path);
        }
        command
            .arg("serve")
            // No config.toml there: only the defaults and these variables apply.
            .current_dir(db.dir())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the engine log"));
        for (key, value) in &vars {
            let (section, name) = key.split_once('.').expect("section.key");
            command.env(
                format!(
                    "ORDER_ENGINE__{}__{}",
                    section.to_uppercase(),
                    name.to_uppercase().replace('.', "__")
                ),
                value,
            );
        }
        let child = command.spawn().expect("start the engine binary");
        let mut engine = EngineProcess {
            child,
            http: Http::new(format!("http://127.0.0.1:{port}")),
            log,
        };
        wait_for(
            "the engine to answer /healthz",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = engine.child.try_wait() {
                    panic!("the engine exited with {status}:\n{}", engine.log_tail());
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    return Err("not listening yet".to_string());
                }
                let resp = engine.request("GET", "/healthz", &[], None);
                if resp.status == 200 {
                    Ok(())
                } else {
                    Err(resp.text)
                }
            },
        );
        engine
    }

    /// The whole log of this process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for the engine")
    }

    /// A client for this process, to keep after it is gone.
    pub fn http_clone(&self) -> Http {
        self.http.clone()
    }

    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        wait_for(
            "the engine to exit",
            Duration::from_secs(45),
            || match self.child.try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".to_string()),
                Err(e) => panic!("wait: {e}"),
            },
        )
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
