//! A MariaDB server of a test's own, from the machine's server binaries (`mariadbd`,
//! `mariadb-install-db`): the TLS test starts it with a certificate, the database outage test
//! kills it under load and starts it again on the same data folder and port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::Connection;

use crate::process::free_port;

/// A MariaDB server of this test's own, as root on a free loopback port with its socket and
/// data in one folder: killed and the folder deleted on drop.
pub(crate) struct MariaServer {
    server: PathBuf,
    dir: PathBuf,
    pub(crate) port: u16,
    /// `ca.crt`, `server.crt` and `server.key`: the server then refuses TCP without TLS.
    tls: Option<PathBuf>,
    child: Option<Child>,
}

/// The first of `names` found in the usual folders.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|name| {
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
    })
}

impl MariaServer {
    /// [`MariaServer::start`] in a fresh temporary folder, without TLS.
    pub(crate) fn create(what: &str) -> Option<MariaServer> {
        let dir = std::env::temp_dir().join(format!("oe_my_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the server folder");
        let server = Self::start(what, dir.clone(), None);
        if server.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        server
    }

    /// Installs a fresh data folder in `dir` and starts the server; with `tls` (a folder
    /// holding `ca.crt`, `server.crt`, `server.key`) it serves TLS, refuses TCP without it,
    /// and listens on 127.0.0.2 too, a name its certificate does not hold. `None` (after one
    /// skip line naming `what` test) when the machine has no MariaDB server binaries and CI is
    /// not set.
    pub(crate) fn start(what: &str, dir: PathBuf, tls: Option<&Path>) -> Option<MariaServer> {
        let (Some(server), Some(install)) = (
            find_program(&["mariadbd", "mysqld"]),
            find_program(&["mariadb-install-db", "mysql_install_db"]),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no MariaDB server binaries (mariadbd, mariadb-install-db), but CI is set: the \
                 {what} test must run in CI"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {what} test (no mariadbd and mariadb-install-db)"
            );
            return None;
        };
        let port = loop {
            let port = free_port();
            if port != 3306 {
                break port;
            }
        };
        // From here on the guard deletes the folder, whatever fails.
        let mut guard = MariaServer {
            server,
            dir,
            port,
            tls: tls.map(Path::to_path_buf),
            child: None,
        };
        let output = Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", guard.data().display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        guard.restart();
        Some(guard)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket(&self) -> String {
        self.dir.join("sock").display().to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("mariadbd.log")
    }

    /// The server's error log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `mariadbd` on the data folder and port it was installed with (after
    /// [`MariaServer::stop_immediately`]: InnoDB recovers what was cut) and waits for it.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "mariadbd is already running");
        let mut command = Command::new(&self.server);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data().display()))
            .arg(format!("--socket={}", self.socket()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .args([
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=200",
            ]);
        match &self.tls {
            Some(pki) => {
                let path = |name: &str| pki.join(name).display().to_string();
                command
                    .arg("--bind-address=127.0.0.1,127.0.0.2")
                    .arg(format!("--ssl-ca={}", path("ca.crt")))
                    .arg(format!("--ssl-cert={}", path("server.crt")))
                    .arg(format!("--ssl-key={}", path("server.key")))
                    .arg("--require-secure-transport=ON");
            }
            None => {
                command.arg("--bind-address=127.0.0.1");
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// SIGKILLs `mariadbd` and reaps it: no shutdown, every connection cut.
    pub(crate) fn stop_immediately(&mut self) {
        let mut child = self.child.take().expect("mariadbd is running");
        child.kill().expect("SIGKILL mariadbd");
        child.wait().expect("reap mariadbd");
    }

    /// Waits (60 s at most) until the server takes a connection on its socket (where no TLS
    /// is needed).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = self.socket_url();
        loop {
            if diesel::MysqlConnection::establish(&url).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "mariadbd exited ({exited:?}):\n{}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready:\n{}",
                self.log()
            );
            // Polling the socket until the server takes a connection.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's `mysql` database over its Unix socket.
    pub(crate) fn socket_url(&self) -> String {
        format!("mysql://root@localhost/mysql?unix_socket={}", self.socket())
    }

    /// `mysql://root@{host}:{port}/mysql`.
    pub(crate) fn url(&self, host: &str) -> String {
        format!("mysql://root@{host}:{}/mysql", self.port)
    }
}

impl Drop for MariaServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
