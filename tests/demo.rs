//! `make demo` as a newcomer stops it: Ctrl-C (SIGINT to its process group) while the
//! simulated shops sell, once the first plans are out. Within 10 s everything is gone —
//! the stages drained, the broker it started stopped, no process left — the demo printed
//! its one summary (with its check of the current plans), and nothing printed a
//! traceback. (GNU make re-raises the SIGINT it got once its recipe is done, so make's
//! own status is "killed by SIGINT" even though the demo script exits 0: the script's clean
//! stop is read from its output.)
//!
//! And a demo that cannot start says why and leaves nothing running: a port of its taken
//! by another program, or one of its stages exiting (here ingest, which refuses the public
//! demo key on a non-loopback address).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nearfield_testkit::repo_path;

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && !cmd.contains("cargo test") {
            found.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The demo's ports are fixed: its tests run one at a time.
static PORTS: Mutex<()> = Mutex::new(());

/// `cmd` started as the demo runs: in the repository, with this build's binary and its
/// own broker, output to `out` (target/…), in a process group of its own.
fn spawn_demo(cmd: &mut Command, out: &str) -> (Child, PathBuf) {
    let out = repo_path(out);
    let log = std::fs::File::create(&out).expect("output file");
    let child = cmd
        .current_dir(repo_path(""))
        .env("DEMO_BIN", env!("CARGO_BIN_EXE_nearfield"))
        .env_remove("NEARFIELD_BROKERS")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start the demo");
    (child, out)
}

/// SIGTERM to `child`'s process group (a test giving up on it).
fn terminate(child: &Child) {
    let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", child.id())]).status();
}

/// `scripts/demo.sh` with `env`, to its end (at most 240 s): its status and output.
fn demo_script(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let (mut demo, out) = spawn_demo(
        Command::new("scripts/demo.sh")
            .envs(env.iter().copied())
            // The stage's error line, not a backtrace, in the log lines the demo shows.
            .env("RUST_BACKTRACE", "0"),
        "target/demo-test-fails.out",
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = demo.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            terminate(&demo);
            panic!("demo.sh still running after 240 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(&out).unwrap_or_default())
}

#[test]
fn a_demo_that_cannot_start_says_why_and_leaves_nothing_running() {
    let _ports = PORTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let demo_dir = repo_path("target/kafka-demo").display().to_string();
    {
        // Another program on the aggregator's port: refused before anything starts.
        let _taken = std::net::TcpListener::bind("127.0.0.1:8081").expect("bind 8081");
        let (status, output) = demo_script(&[]);
        assert!(!status.success(), "{output}");
        assert!(output.contains("demo: port 8081 is already in use"), "{output}");
        assert!(!output.contains("demo: Kafka at"), "Kafka started anyway:\n{output}");
    }
    // Ingest exits (the demo key off loopback): the demo fails naming the stage, and
    // stops what it started.
    let (status, output) = demo_script(&[("NEARFIELD_INGEST__LISTEN", "0.0.0.0:8080")]);
    assert!(!status.success(), "{output}");
    assert!(output.contains("demo: ingest exited"), "{output}");
    assert!(output.contains("refused on 0.0.0.0:8080"), "ingest's reason shown:\n{output}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_with(&demo_dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(processes_with(&demo_dir).is_empty(), "left running: {:?}", processes_with(&demo_dir));
    assert!(!listening(8080) && !listening(9080), "ingest's ports still served");
}

#[test]
fn ctrl_c_stops_the_demo_within_ten_seconds_with_one_summary() {
    let _ports = PORTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = repo_path("");
    for port in [8080, 8081, 8082, 8090, 9080] {
        assert!(!listening(port), "port {port} is taken: the demo needs it (is a demo running?)");
    }
    // As from a terminal: SIGINT at its default, whatever this test inherited (a shell
    // running tests in the background ignores it, and an ignored SIGINT cannot be trapped).
    let (mut make, out) = spawn_demo(
        Command::new("python3")
            .args([
                "-c",
                "import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp('make', ['make', 'demo'])",
            ])
            .env("DEMO_SECONDS", "600")
            .env("DEMO_RATE", "300")
            .env_remove("MAKEFLAGS"),
        "target/demo-test.out",
    );
    let text = || std::fs::read_to_string(&out).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !text().contains("simulated shops") {
        if Instant::now() > deadline || make.try_wait().ok().flatten().is_some() {
            terminate(&make);
            panic!("the demo never started its shops:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Sales until the first plans, so the summary has plans to check.
    let planned = |t: &str| {
        t.lines().filter_map(|l| l.split("· signals ").nth(1)).any(|n| {
            let n = n.trim().replace(',', "");
            n.parse::<u64>().is_ok_and(|n| n > 0)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while !planned(&text()) {
        if Instant::now() > deadline || make.try_wait().ok().flatten().is_some() {
            terminate(&make);
            panic!("no plan within 300 s of the shops starting:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let group = make.id();
    let interrupted = Instant::now();
    let sent = Command::new("kill").args(["-INT", "--", &format!("-{group}")]).status();
    assert!(sent.is_ok_and(|s| s.success()), "SIGINT to the process group");
    let status = loop {
        if let Some(s) = make.try_wait().expect("wait") {
            break s;
        }
        if interrupted.elapsed() > Duration::from_secs(10) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
            panic!("make demo still running 10 s after Ctrl-C:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever it started: stages (in sessions of their own), watchdogs, the broker.
    let demo_dir = root.join("target/kafka-demo");
    let leftovers = || {
        let mut l = processes_with(env!("CARGO_BIN_EXE_nearfield"));
        l.extend(processes_with(&demo_dir.display().to_string()));
        l.extend(processes_with("do sleep 1; done; kill -TERM"));
        l
    };
    // The demo stops and waits for everything it started (its watchdogs and the broker's
    // included), so nothing is left once make has returned.
    let left = leftovers();
    let took = interrupted.elapsed();
    let output = text();
    assert!(left.is_empty(), "left running when make returned after {took:?}: {left:?}\n{output}");
    for port in [8080, 8081, 8082, 8090, 9080] {
        assert!(!listening(port), "port {port} still served after Ctrl-C\n{output}");
    }
    assert!(!Path::new(&demo_dir.join("node-1/pid")).exists(), "the broker's pid file remains");
    assert!(
        status.success() || status.signal() == Some(2),
        "make demo: {status:?} (the script's clean stop is 0; make re-raises SIGINT)\n{output}"
    );
    assert!(!output.contains("Traceback"), "a traceback:\n{output}");
    assert!(!output.contains("panicked"), "a panic:\n{output}");
    assert_eq!(output.matches("demo: summary").count(), 1, "one summary:\n{output}");
    assert!(output.contains("demo: stopping (Ctrl-C)"), "{output}");
    assert!(output.contains("  sent "), "the summary says what was sent:\n{output}");
    // Every current plan of the demo: one per (SKU, warehouse, horizon), rounded once,
    // allocations adding up (scripts/demo/report.py checks them on the emitter's plans).
    assert!(output.contains("  current plans: "), "the plans were checked:\n{output}");
    assert!(!output.contains("CONTRACT BROKEN"), "{output}");
    eprintln!("make demo stopped {took:?} after SIGINT: {status:?}");
}
