//! Headless Chromium for the live page's browser tests: render a URL, read the DOM it
//! ends with, and what the page printed to its console. Chromium is a test dependency
//! (`scripts/bootstrap.sh --test` installs it); without it a test fails, naming the fix.

use std::process::{Command, Output};

/// The Chromium binary on this machine.
pub fn chromium() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("headless Chromium is needed: scripts/bootstrap.sh --test installs it (apt-get install chromium)")
}

/// Loads `url` in a fresh headless profile with `extra` flags (e.g. `--dump-dom`,
/// `--screenshot=FILE`), giving the page `budget_ms` of virtual time.
pub fn headless(url: &str, budget_ms: u32, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("profile");
    Command::new(chromium())
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .args(["--window-size=1400,860", &format!("--virtual-time-budget={budget_ms}")])
        .args(["--enable-logging=stderr", "--v=0", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// What the page wrote to its console, and uncaught script errors.
pub fn console(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect()
}

/// The attributes of the page's `<body>` tag, where the page reports what it drew
/// (`data-cells`, `data-signals`) and any script error (`data-error`).
pub fn body_tag(dom: &str) -> &str {
    dom.split("<body").nth(1).and_then(|b| b.split('>').next()).unwrap_or_default()
}
