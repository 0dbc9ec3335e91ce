//! `palisade demo` — the README's first command — runs to the end offline and shows what
//! it claims to show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_offline_and_shows_every_section() {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
            .arg("demo")
            .env_remove("ANTHROPIC_API_KEY")
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the demo finished within two minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "upstream saw only",
        "was denied by policy",
        "requires approval and was not executed",
        "repeated with the token: 200",
        "[tool_use deleteRecord",
        "429 rate_limit_error",
        "GET /v1/alerts → alr_",
        "judge scored policy 0.40 -> 400",
        "judge scored policy 0.40 -> 200",
        "Verifying every tenant's receipt chain",
        "initech: ok",
        "Done.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
