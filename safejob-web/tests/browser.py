#!/usr/bin/env python3
"""The dashboard in a real headless browser (Debian's chromium through chromedriver).

Starts the `serve_demo` example (a seeded SQLite queue on 127.0.0.1), then:

* loads every dashboard page and fails on any console error the browser logged;
* writes a PNG screenshot of each page under target/dashboard-screenshots/;
* clicks Retry on the dead job in the dead-letter page and checks, in the SQLite file itself
  (the store's row, not the page), that the job is now pending.

Without chromium / chromedriver / selenium it prints why and exits 0 (skipped), unless
SAFEJOB_REQUIRE_BACKENDS=1, where a missing browser fails the run. Run from the repository root:

    python3 safejob-web/tests/browser.py
"""

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SHOTS = os.path.join(ROOT, "target", "dashboard-screenshots")
PAGES = [
    ("overview", "/"),
    ("queues", "/ui/queues"),
    ("jobs", "/ui/jobs"),
    ("job", "/ui/jobs/3"),
    ("dead", "/ui/dead"),
    ("keys", "/ui/keys"),
    ("schedules", "/ui/schedules"),
    ("batches", "/ui/batches"),
    ("batch", "/ui/batches/1"),
    ("actions", "/ui/actions"),
    ("workers", "/ui/workers"),
]
DEAD_JOB = 3  # the seed's dead payment.charge job (tests/common/seed.rs enqueues it third)


def skip_or_fail(why):
    if os.environ.get("SAFEJOB_REQUIRE_BACKENDS") == "1":
        print(f"browser test FAILED: {why} (SAFEJOB_REQUIRE_BACKENDS=1)")
        sys.exit(1)
    print(f"browser test SKIPPED: {why}")
    sys.exit(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url, proc):
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"serve_demo exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("serve_demo did not answer in 60 s")


def job_state(db, job_id):
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT state FROM safe_queue_jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        con.close()
    return row[0] if row else None


def main():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        skip_or_fail("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        skip_or_fail("the selenium Python package is not installed (pip install selenium)")

    subprocess.run(
        ["cargo", "build", "-q", "-p", "safejob-web", "--example", "serve_demo"], cwd=ROOT, check=True
    )
    os.makedirs(SHOTS, exist_ok=True)
    db = os.path.join(TARGET, "safejob-web-browser.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [os.path.join(TARGET, "debug", "examples", "serve_demo"), db, f"127.0.0.1:{port}"], cwd=ROOT
    )
    failures = []
    driver = None
    try:
        wait_up(base + "/jobs", server)
        if job_state(db, DEAD_JOB) != "dead":
            raise RuntimeError(f"the seed's job {DEAD_JOB} is not dead: {job_state(db, DEAD_JOB)}")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900"]:
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=options)

        for name, path in PAGES:
            driver.get(base + path)
            title = driver.find_element(By.TAG_NAME, "h1").text
            errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            shot = os.path.join(SHOTS, f"{name}.png")
            driver.save_screenshot(shot)
            status = "ok" if not errors else f"{len(errors)} console error(s)"
            print(f"  {path:<16} h1={title!r:<22} {status}; screenshot {os.path.relpath(shot, ROOT)}")
            for e in errors:
                failures.append(f"{path}: console error: {e.get('message')}")
            if not title:
                failures.append(f"{path}: no heading")

        driver.get(base + "/ui/dead")
        driver.find_element(By.ID, f"retry-{DEAD_JOB}").click()
        message = driver.find_element(By.ID, "message").text
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        failures += [f"after retry: console error: {e.get('message')}" for e in errors]
        state = job_state(db, DEAD_JOB)
        print(f"  clicked Retry on job {DEAD_JOB}: page says {message!r}; the store says {state!r}")
        if state != "pending":
            failures.append(f"job {DEAD_JOB} is {state!r} after clicking Retry, not 'pending'")
    except Exception as e:  # a crash of the harness is a failure too, reported with the others
        failures.append(f"{type(e).__name__}: {e}")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)

    if failures:
        print("browser test FAILED:")
        for f in failures:
            print("  - " + f)
        print("0 passed, 1 failed")
        sys.exit(1)
    print(f"browser test: {len(PAGES)} pages without console errors, retry made the dead job pending")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
