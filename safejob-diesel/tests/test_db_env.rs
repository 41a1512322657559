//! What `safejob_diesel::testing::TestDb` answers when its server cannot be tested: without its
//! environment variable, or with the server unreachable, a skip that prints why — or, with
//! `SAFEJOB_REQUIRE_BACKENDS=1`, `TestDbError::Required`, so CI cannot pass by skipping.
//!
//! The variables belong to the whole process, so each case runs in a child process of this
//! binary with its own environment (`harness = false`: `main` is both the parent and the child).

use std::process::Command;

/// Set in a child: the backend whose constructor to call.
const CHILD: &str = "SAFEJOB_TEST_DB_ENV_CHILD";
const REQUIRE: &str = "SAFEJOB_REQUIRE_BACKENDS";

fn main() {
    match std::env::var(CHILD) {
        Ok(backend) => child(&backend),
        Err(_) => parent(),
    }
}

/// Calls the constructor and prints what it answered on stdout, one line.
fn child(backend: &str) {
    use safejob_diesel::testing::TestDb;
    let answer = match backend {
        #[cfg(feature = "postgres")]
        "postgres" => TestDb::postgres_from_env(),
        #[cfg(feature = "mysql")]
        "mysql" => TestDb::mysql_from_env(),
        other => panic!("no backend {other} in this build"),
    };
    match answer {
        Ok(Some(_)) => println!("ready"),
        Ok(None) => println!("skipped"),
        Err(error) => println!("error: {error}"),
    }
}

/// One case: the child's stdout and stderr.
fn run(backend: &str, var: &str, url: Option<&str>, required: bool) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.env(CHILD, backend).env_remove(var).env_remove(REQUIRE);
    if let Some(url) = url {
        cmd.env(var, url);
    }
    if required {
        cmd.env(REQUIRE, "1");
    }
    let out = cmd.output().expect("the child ran");
    assert!(out.status.success(), "{backend}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// Catches: a constructor that panics or errs when the variable is missing and backends are not
/// required, one that skips silently (no `skipped:` line), and one that skips although they are
/// required.
fn check(backend: &str, var: &str) {
    let (answer, said) = run(backend, var, None, false);
    assert_eq!(answer, "skipped", "{backend}: {said}");
    assert_eq!(said, format!("skipped: {var} is not set"));

    let (answer, _) = run(backend, var, None, true);
    assert_eq!(answer, format!("error: {REQUIRE}=1 but {var} is not set"));

    // Nothing listens on port 9: unreachable, so skipped — or required.
    let nowhere = format!("{backend}://root@127.0.0.1:9/test");
    let (answer, said) = run(backend, var, Some(&nowhere), false);
    assert_eq!(answer, "skipped", "{backend}: {said}");
    assert!(
        said.starts_with(&format!("skipped: the database at {var} is unreachable: ")),
        "{said}"
    );
    let (answer, _) = run(backend, var, Some(&nowhere), true);
    assert!(
        answer.starts_with(&format!(
            "error: {REQUIRE}=1 but the database at {var} is unreachable: "
        )),
        "{answer}"
    );
    println!(
        "test_db_env {backend}: skipped without {var} or a server, required with {REQUIRE}=1: ok"
    );
}

fn parent() {
    let mut checked = 0;
    #[cfg(feature = "postgres")]
    {
        check("postgres", "SAFEJOB_TEST_POSTGRES_URL");
        checked += 1;
    }
    #[cfg(feature = "mysql")]
    {
        check("mysql", "SAFEJOB_TEST_MYSQL_URL");
        checked += 1;
    }
    if checked == 0 {
        safejob_test_kit::report_skip("test_db_env: neither the postgres nor the mysql feature");
    }
}
