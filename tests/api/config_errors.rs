//! The real binary (SPEC §Configuration, §Command line): an invalid value, unknown key or
//! unknown section stops start-up with exit code 2 and one line
//! `config error: <section>.<key>: <reason>`; `token --user ID` prints only a JWT, or exits 1
//! for an unknown user. Each run happens in its own temporary working directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use order_engine::auth::JwtKeys;

use crate::helpers::wait_for;

/// A temporary working directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("oe_cli_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the engine binary in `dir` with only the given `ORDER_ENGINE__*` variables; kills it
/// and fails if it has not exited within the deadline.
fn run(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_order-engine"));
    command
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("ORDER_ENGINE__") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("start the engine binary");
    let started = Instant::now();
    wait_for(
        "the engine binary to exit",
        Duration::from_secs(90),
        || match child.try_wait() {
            Ok(Some(_)) => Ok(()),
            Ok(None) if started.elapsed() > Duration::from_secs(60) => {
                let _ = child.kill();
                Err("still running after 60 s: killed".to_string())
            }
            Ok(None) => Err("still running".to_string()),
            Err(e) => Err(e.to_string()),
        },
    );
    child
        .wait_with_output()
        .expect("collect the binary's output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code 2 and stderr exactly one line starting `config error: <key>: `.
#[track_caller]
fn assert_config_error(output: &Output, key: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status {:?}, stderr {stderr:?}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {stderr:?}");
    let prefix = format!("config error: {key}: ");
    assert!(
        lines[0].starts_with(&prefix) && lines[0].len() > prefix.len(),
        "stderr {stderr:?} does not start with {prefix:?} and a reason"
    );
    assert!(
        stderr.ends_with('\n'),
        "stderr {stderr:?} is not a whole line"
    );
}

#[test]
fn invalid_value_in_the_file() {
    let dir = TempDir::new();
    let config = dir.write("bad.toml", "[orders]\npayment_timeout_secs = \"soon\"\n");
    let output = run(&dir, &["--config", config.to_str().unwrap()], &[]);
    assert_config_error(&output, "orders.payment_timeout_secs");
}

#[test]
fn out_of_range_value_in_the_file() {
    let dir = TempDir::new();
    let config = dir.write("bad.toml", "[pricing]\ncents_per_point = 0\n");
    let output = run(
        &dir,
        &["--config", config.to_str().unwrap(), "migrate"],
        &[],
    );
    assert_config_error(&output, "pricing.cents_per_point");
}

#[test]
fn unknown_key_in_the_file() {
    let dir = TempDir::new();
    let config = dir.write("bad.toml", "[server]\nbind = \"127.0.0.1:0\"\nbogus = 1\n");
    let output = run(&dir, &["--config", config.to_str().unwrap()], &[]);
    assert_config_error(&output, "server.bogus");
}

#[test]
fn unknown_section_in_the_file() {
    let dir = TempDir::new();
    let config = dir.write("bad.toml", "[nope]\nx = 1\n");
    let output = run(&dir, &["--config", config.to_str().unwrap()], &[]);
    assert_config_error(&output, "nope.x");
}

#[test]
fn bad_schedule_in_the_file() {
    let dir = TempDir::new();
    let config = dir.write(
        "bad.toml",
        "[[schedules]]\nname = \"nightly\"\njob = \"purge\"\ncron = \"0 3 * * *\"\n\
         timezone = \"Mars/Olympus\"\n",
    );
    let output = run(&dir, &["--config", config.to_str().unwrap()], &[]);
    assert_config_error(&output, "schedules[0].timezone");
}

#[test]
fn invalid_environment_override() {
    let dir = TempDir::new();
    let config = dir.write("ok.toml", "[pricing]\ncents_per_point = 2\n");
    let output = run(
        &dir,
        &["--config", config.to_str().unwrap()],
        &[("ORDER_ENGINE__PRICING__CENTS_PER_POINT", "0")],
    );
    assert_config_error(&output, "pricing.cents_per_point");
}

#[test]
fn unknown_environment_key() {
    let dir = TempDir::new();
    let output = run(&dir, &[], &[("ORDER_ENGINE__ORDERS__PAYMENT_TIMEOUT", "5")]);
    assert_config_error(&output, "orders.payment_timeout");
}

#[test]
fn token_for_unknown_and_seeded_users() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let env = [
        ("ORDER_ENGINE__DATABASE__URL", url.as_str()),
        ("ORDER_ENGINE__AUTH__JWT_SECRET", "cli-test-secret"),
    ];

    let unknown = run(&dir, &["token", "--user", "424242"], &env);
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "token for an unknown user: {:?} {}",
        unknown.status,
        text(&unknown.stderr)
    );
    assert_eq!(text(&unknown.stdout), "", "no token for an unknown user");

    let seeded = run(&dir, &["seed-demo"], &env);
    assert!(
        seeded.status.success(),
        "seed-demo: {}",
        text(&seeded.stderr)
    );
    // The first user listed under "users:" by seed-demo.
    let stdout = text(&seeded.stdout);
    let user_id: i64 = stdout
        .lines()
        .skip_while(|line| line.trim() != "users:")
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no user in seed-demo's output: {stdout}"));

    let token = run(&dir, &["token", "--user", &user_id.to_string()], &env);
    assert!(token.status.success(), "token: {}", text(&token.stderr));
    let stdout = text(&token.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "token printed more than one line: {stdout:?}"
    );
    let jwt = lines[0];
    assert_eq!(jwt.split('.').count(), 3, "not a JWT: {jwt:?}");
    assert_eq!(
        JwtKeys::new("cli-test-secret")
            .verify(jwt)
            .expect("a valid client JWT"),
        user_id
    );
}
