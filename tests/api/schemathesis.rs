//! Schemathesis (property-based API testing from the OpenAPI document) against the running
//! engine, with both kinds of credentials: no 5xx, and every response's status, content type
//! and body as `GET /openapi.json` documents them. Runs when `TEST_SCHEMATHESIS` names the
//! `schemathesis` executable (`.ci/run` installs it into a venv); skipped with one line
//! otherwise, and a failure under CI.

use std::process::Command;
use std::sync::Once;

use crate::helpers::*;
use crate::on_both_backends;

const CHECKS: &str = "not_a_server_error,response_schema_conformance,content_type_conformance,\
                      status_code_conformance";

fn executable() -> Option<String> {
    static SKIP: Once = Once::new();
    service_url("TEST_SCHEMATHESIS", "schemathesis", &SKIP)
}

/// One run over the operations of `tags`, sending `Authorization: Bearer <bearer>`.
#[track_caller]
fn run(exe: &str, app: &TestApp, bearer: &str, tags: &[&str]) {
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(format!("{}/openapi.json", app.base))
        .args(["-H", &format!("Authorization: Bearer {bearer}")])
        .args(["--checks", CHECKS])
        .args(["--phases", "coverage,fuzzing"])
        .args(["--max-examples", "30"])
        // Steady: the same cases on every run; a failure is reproducible with the same seed.
        .args(["--seed", "20261202"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .arg("--no-color");
    for tag in tags {
        command.args(["--include-tag", tag]);
    }
    // Its caches (.schemathesis, .hypothesis) go to a folder of this run's own, not into the
    // checkout, and two runs at once never share one.
    let dir = std::env::temp_dir().join(format!("oe-schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a folder for schemathesis");
    let output = command
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Its report ends with the findings; a traceback before them can be long.
    let tail: String = {
        let chars: Vec<char> = text.chars().collect();
        chars[chars.len().saturating_sub(12_000)..].iter().collect()
    };
    assert!(
        output.status.success(),
        "schemathesis over {tags:?} failed ({}):\n{tail}",
        output.status
    );
    assert!(
        text.contains("passed"),
        "no test case ran over {tags:?}:\n{text}"
    );
}

on_both_backends! {
    /// Admins, operations and the provider route with the admin token; the client routes
    /// with a student's JWT.
    fn schemathesis_finds_no_server_error_and_no_undocumented_answer(app) {
        let Some(exe) = executable() else {
            return;
        };
        let (_, token) = app.user_with_token(1000);
        app.course(500);
        run(&exe, app, ADMIN_TOKEN, &["admins", "operations", "payment provider"]);
        run(&exe, app, &token, &["clients"]);
    }
}
