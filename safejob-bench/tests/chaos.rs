//! Short multi-process chaos runs of real worker processes, and the single-fault proofs, through
//! the `safejob-chaos` binary: on SQLite always, on PostgreSQL and MariaDB when
//! `SAFEJOB_TEST_POSTGRES_URL` / `SAFEJOB_TEST_MYSQL_URL` are set (a skip line otherwise;
//! `SAFEJOB_REQUIRE_BACKENDS=1` turns a missing database into a failure).
//!
//! Each backend runs the three effects modes (after-commit, transactional, outbox) and the proofs
//! at once, each in its own namespace (a
//! SQLite file of its own, a PostgreSQL schema, a MySQL database, created and dropped by the
//! binary), so the three backends finish in about a minute each on two cores.

use std::{
    process::{Command, Output},
    thread,
};

use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_safejob-chaos");

/// The URL in `var` when the backend can be tested; `None` after printing why not.
fn server_url(var: &str, compiled: bool, feature: &str) -> Option<String> {
    let url = safejob_test_kit::backend_url(var)?;
    if !compiled {
        safejob_test_kit::skip_unless_required(format_args!(
            "safejob-bench was built without the `{feature}` feature"
        ));
        return None;
    }
    Some(url)
}

fn run(args: &[String]) -> Output {
    Command::new(EXE)
        .args(args)
        .output()
        .expect("run safejob-chaos")
}

/// The JSON lines a run printed.
fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn chaos_args(url: &str, effects: &str, seed: u64, proxy: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--url",
        url,
        "--workers",
        "4",
        "--keys",
        "200",
        "--duplicates",
        "3",
        "--duration",
        "12",
        "--seed",
        &seed.to_string(),
        "--kill-rate",
        "2.5",
        "--pause-rate",
        "0.6",
        "--effects",
        effects,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if proxy {
        args.extend(["--proxy", "--ambiguous-rate", "1.5"].map(String::from));
    }
    args
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Checks one chaos run's JSON line and exit status.
fn check_chaos(label: &str, out: &Output, proxy: bool) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = lines(out);
    assert_eq!(
        lines.len(),
        1,
        "{label}: one JSON line expected; stderr: {stderr}"
    );
    let v = &lines[0];
    println!("{label}: {v}");
    assert!(
        out.status.success(),
        "{label}: exit status {:?}: {v}",
        out.status
    );
    assert_eq!(v["ok"], Value::Bool(true), "{label}: {v}");
    assert_eq!(u(v, "succeeded"), u(v, "keys"), "{label}: {v}");
    for zero in [
        "duplicate_successes",
        "lost",
        "effects_doubled",
        "effects_missing",
        "effects_unexpected",
    ] {
        assert_eq!(u(v, zero), 0, "{label}: {zero} in {v}");
    }
    assert!(u(v, "kills") >= 20, "{label}: at least 20 kills: {v}");
    assert!(
        u(v, "pauses") >= 5,
        "{label}: at least 5 pauses past the TTL: {v}"
    );
    if v["effects"] == "outbox" {
        // Every effect delivered at least once; a receiver deduplicating by message id saw each
        // exactly once.
        let o = &v["outbox"];
        assert_eq!(u(o, "messages"), u(o, "expected"), "{label}: {o}");
        assert_eq!(u(o, "received_unique"), u(o, "expected"), "{label}: {o}");
        for zero in [
            "missing",
            "unexpected",
            "undelivered",
            "not_received",
            "phantom",
        ] {
            assert_eq!(u(o, zero), 0, "{label}: outbox {zero} in {o}");
        }
    }
    if v["effects"] != "after-commit" {
        assert_eq!(
            v["effects_in_doubt"].as_array().map(Vec::len),
            Some(0),
            "{label}: transactional effects are never in doubt: {v}"
        );
    }
    if proxy {
        assert!(
            u(v, "ambiguous_cuts") >= 5,
            "{label}: at least 5 ambiguous commits: {v}"
        );
        // In outbox mode the relays' own COMMITs also match the proxy's pattern on MySQL, so a
        // short run may cut only relay commits (which the relay's fenced marks absorb); the
        // finalize path is held to it in the two other modes.
        if v["effects"] != "outbox" {
            assert!(
                u(v, "ambiguous_resolved_committed") >= 1,
                "{label}: the runner resolved ambiguous commits that did commit: {v}"
            );
        }
    }
}

/// Checks the proofs' JSON lines.
fn check_proofs(label: &str, out: &Output, server: bool) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = lines(out);
    for line in &lines {
        println!("{label}: {line}");
    }
    let proof = |name: &str| {
        lines
            .iter()
            .find(|l| l["proof"] == name)
            .unwrap_or_else(|| panic!("{label}: no {name} proof; stderr: {stderr}"))
    };
    let zombie = proof("zombie");
    assert_eq!(zombie["ok"], Value::Bool(true), "{label}: {zombie}");
    for case in zombie["cases"].as_array().expect("cases") {
        assert_eq!(case["zombie"]["outcome"], "lease_lost", "{label}: {case}");
        assert_eq!(case["row_fence"], 2, "{label}: {case}");
    }
    let skew = proof("clock-skew");
    assert_eq!(skew["ok"], Value::Bool(true), "{label}: {skew}");
    if server {
        assert_eq!(
            skew["ahead_worker_on_live_lease"]["outcome"], "busy",
            "{label}: {skew}"
        );
        assert_eq!(
            skew["behind_worker_on_expired_lease"]["outcome"], "lease_lost",
            "{label}: {skew}"
        );
    }
    let panic = proof("panic");
    assert_eq!(panic["ok"], Value::Bool(true), "{label}: {panic}");
    assert_eq!(
        panic["control_check_sees_open_transaction"],
        Value::Bool(true),
        "{label}: {panic}"
    );
    assert!(out.status.success(), "{label}: {:?}", out.status);
}

/// All four effects modes (after-commit, transactional, outbox, none) and the proofs, at once; `url_for(name)` gives each its own database
/// URL.
fn chaos_backend(backend: &str, url_for: impl Fn(&str) -> String, proxy: bool, seed: u64) {
    thread::scope(|s| {
        let after = {
            let args = chaos_args(&url_for("after_commit"), "after-commit", seed, proxy);
            s.spawn(move || run(&args))
        };
        let tx = {
            let args = chaos_args(&url_for("transactional"), "transactional", seed + 1, proxy);
            s.spawn(move || run(&args))
        };
        let outbox = {
            let args = chaos_args(&url_for("outbox"), "outbox", seed + 2, proxy);
            s.spawn(move || run(&args))
        };
        let none = {
            let args = chaos_args(&url_for("no_effects"), "none", seed + 3, proxy);
            s.spawn(move || run(&args))
        };
        let proofs = {
            let args: Vec<String> = vec!["prove".into(), "--url".into(), url_for("prove")];
            s.spawn(move || run(&args))
        };
        check_chaos(
            &format!("{backend} after-commit"),
            &after.join().expect("after-commit run"),
            proxy,
        );
        check_chaos(
            &format!("{backend} transactional"),
            &tx.join().expect("transactional run"),
            proxy,
        );
        check_chaos(
            &format!("{backend} outbox"),
            &outbox.join().expect("outbox run"),
            proxy,
        );
        check_chaos(
            &format!("{backend} none"),
            &none.join().expect("no-effects run"),
            proxy,
        );
        check_proofs(
            &format!("{backend} proofs"),
            &proofs.join().expect("proofs"),
            proxy,
        );
    });
}

/// The checker is not a rubber stamp: a job that writes its effect twice, forgets it, or declares
/// effects in a run whose jobs have none fails the run (exit status 1) with the count of keys it
/// broke.
#[test]
fn the_checker_fails_runs_that_break_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (sabotage, effects, field) in [
        ("double-effect", "after-commit", "effects_doubled"),
        ("forget-effect", "after-commit", "effects_missing"),
        ("declare-effects", "none", "effects_unexpected"),
    ] {
        let url = format!(
            "sqlite://{}",
            dir.path().join(format!("{sabotage}.db")).display()
        );
        let args: Vec<String> = [
            "--url",
            &url,
            "--workers",
            "2",
            "--keys",
            "20",
            "--duplicates",
            "2",
            "--duration",
            "1",
            "--seed",
            "9",
            "--sabotage",
            sabotage,
            "--effects",
            effects,
        ]
        .map(String::from)
        .to_vec();
        let out = run(&args);
        // A failed run keeps its logs and says where: clean them up.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(kept) = stderr
            .lines()
            .find_map(|l| l.split_once("events are in ").map(|(_, dir)| dir.trim()))
        {
            let _ = std::fs::remove_dir_all(kept);
        }
        let lines = lines(&out);
        assert_eq!(lines.len(), 1, "{sabotage}: {out:?}");
        let v = &lines[0];
        assert_eq!(out.status.code(), Some(1), "{sabotage}: {v}");
        assert_eq!(v["ok"], Value::Bool(false), "{sabotage}: {v}");
        assert_eq!(u(v, field), 20, "{sabotage}: {v}");
        assert_eq!(u(v, "succeeded"), 20, "{sabotage}: {v}");
    }
}

#[test]
fn sqlite_kills_and_pauses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    chaos_backend(
        "sqlite",
        |name| format!("sqlite://{}", path.join(format!("{name}.db")).display()),
        false,
        101,
    );
}

#[test]
fn postgres_kills_pauses_and_ambiguous_commits() {
    let Some(url) = server_url(
        "SAFEJOB_TEST_POSTGRES_URL",
        cfg!(feature = "postgres"),
        "postgres",
    ) else {
        return;
    };
    // The binary makes its own schema per run.
    chaos_backend("postgres", |_| url.clone(), true, 201);
}

#[test]
fn mariadb_kills_pauses_and_ambiguous_commits() {
    let Some(url) = server_url("SAFEJOB_TEST_MYSQL_URL", cfg!(feature = "mysql"), "mysql") else {
        return;
    };
    // The binary makes its own database per run.
    chaos_backend("mariadb", |_| url.clone(), true, 301);
}
