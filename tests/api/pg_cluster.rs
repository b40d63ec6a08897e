//! A PostgreSQL cluster of a test's own, from the machine's PostgreSQL binaries
//! (`/usr/lib/postgresql/*/bin`): the database outage tests stop it under load, the TLS tests
//! start it with a certificate.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use crate::process::free_port;

/// A PostgreSQL cluster of this test's own: stopped (immediately) and deleted on drop.
pub(crate) struct PgCluster {
    bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    /// Running as root: the server tools run as the `postgres` OS user.
    as_postgres: bool,
}

impl PgCluster {
    /// The newest `/usr/lib/postgresql/<major>/bin` with `initdb` and `pg_ctl`.
    fn find_bin() -> Option<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
                    .then_some((major, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    }

    /// `initdb` into a fresh temporary folder and start the server; `None` (after one skip
    /// line naming `what` test) when the machine has no PostgreSQL binaries and CI is not set.
    pub(crate) fn create(what: &str) -> Option<PgCluster> {
        let cluster = Self::initdb(what)?;
        cluster.start(&[]);
        Some(cluster)
    }

    /// [`PgCluster::create`] without starting the server.
    pub(crate) fn initdb(what: &str) -> Option<PgCluster> {
        let Some(bin) = Self::find_bin() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl), but CI is \
                 set: the {what} test must run in CI"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {what} test (no /usr/lib/postgresql/*/bin/initdb and pg_ctl)"
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!("oe_pg_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the cluster folder");
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let port = loop {
            let port = free_port();
            if port != 5432 {
                break port;
            }
        };
        // From here on the guard deletes the folder, whatever fails.
        let cluster = PgCluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the cluster folder to postgres");
        }
        cluster.tool(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        Some(cluster)
    }

    /// Hands a file the test wrote to the server's OS user (`postgres` when running as root).
    pub(crate) fn give(&self, path: &std::path::Path) {
        if self.as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(path)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown {}", path.display());
        }
    }

    pub(crate) fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of the server tools (as `postgres` when root) and asserts that it succeeded.
    pub(crate) fn tool(&self, name: &str, args: &[&str]) {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{name} {args:?}: {}\n{}\n{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        );
    }

    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Starts the server on its loopback port (its socket in its own folder), with `extra`
    /// server options (`-c name=value`), and waits for it.
    pub(crate) fn start(&self, extra: &[&str]) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        for option in extra {
            options.push(' ');
            options.push_str(option);
        }
        let log = self.dir.join("postgres.log").display().to_string();
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `pg_ctl -m immediate stop`: the server dies without a shutdown checkpoint, cutting
    /// every connection.
    pub(crate) fn stop_immediate(&self) {
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.dir.join("data").join("postmaster.pid").exists() {
            let program = self.bin.join("pg_ctl");
            let data = self.data();
            let args = ["-D", &data, "-m", "immediate", "-w", "stop"];
            let _ = if self.as_postgres {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&program)
                    .args(args)
                    .output()
            } else {
                Command::new(&program).args(args).output()
            };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
