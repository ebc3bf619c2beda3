//! [`Deployment`]: the instances of one stage under test, as separate `nearfield`
//! processes sharing one configuration file, that a test starts, kills, stops and scales,
//! and whose logs it reads. Fault tests read as specifications on top of it ("kill `a`
//! while it owns partitions; start `b` and `c`; stop them"), for either stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Process;

/// One stage's instances.
#[derive(Debug)]
pub struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    binary: PathBuf,
    subcommand: String,
    /// Per instance: how many times it was started, and the running process.
    instances: BTreeMap<String, (usize, Option<Process>)>,
}

impl Deployment {
    /// A deployment of `nearfield <subcommand>` (the binary at `binary`) with `config` as
    /// its configuration file; `files` are written beside it (a catalog, a registry).
    pub fn new(binary: &Path, subcommand: &str, config: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nearfield.toml");
        std::fs::write(&path, config).expect("config");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("file");
        }
        Deployment {
            dir,
            config: path,
            binary: binary.to_path_buf(),
            subcommand: subcommand.to_string(),
            instances: BTreeMap::new(),
        }
    }

    /// The directory holding the configuration and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self, instance: &str, generation: usize) -> PathBuf {
        self.dir.path().join(format!("{instance}-{generation}.log"))
    }

    /// The current log of `instance`.
    pub fn log(&self, instance: &str) -> String {
        let generation = self.instances.get(instance).map_or(0, |(g, _)| g.saturating_sub(1));
        std::fs::read_to_string(self.log_path(instance, generation)).unwrap_or_default()
    }

    /// Starts (or starts again) `instance`, with `--instance-id instance`.
    pub fn start(&mut self, instance: &str) {
        self.start_with(instance, &[]);
    }

    /// Starts `instance` with its HTTP server on a free loopback port; returns its base
    /// URL once it answers.
    pub fn start_listening(&mut self, instance: &str) -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        self.start_with(instance, &["--listen", &addr]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "{instance} never listened:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("http://{addr}")
    }

    /// Starts `instance` with extra arguments after the subcommand.
    pub fn start_with(&mut self, instance: &str, args: &[&str]) {
        let entry = self.instances.entry(instance.to_string()).or_insert((0, None));
        assert!(entry.1.is_none(), "{instance} is running");
        let log = self.dir.path().join(format!("{instance}-{}.log", entry.0));
        let child = Command::new(&self.binary)
            .args(["--config", self.config.to_str().expect("utf8")])
            .args([self.subcommand.as_str(), "--instance-id", instance])
            .args(args)
            .env_remove("NEARFIELD_BROKERS")
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nearfield {}: {e}", self.subcommand));
        entry.0 += 1;
        entry.1 = Some(Process(child));
    }

    fn take(&mut self, instance: &str) -> Process {
        self.instances
            .get_mut(instance)
            .and_then(|(_, p)| p.take())
            .unwrap_or_else(|| panic!("{instance} is not running"))
    }

    /// SIGKILLs `instance`.
    pub fn kill(&mut self, instance: &str) {
        let mut p = self.take(instance);
        p.0.kill().expect("SIGKILL");
        let _ = p.0.wait();
    }

    /// SIGKILLs `instance` and starts it again.
    pub fn restart(&mut self, instance: &str) {
        self.kill(instance);
        self.start(instance);
    }

    /// Stops `instance` with SIGTERM and asserts it drained and exited cleanly within 40 s.
    pub fn stop(&mut self, instance: &str) {
        let status = self.terminate(instance);
        assert!(
            status.is_some_and(|s| s.success()),
            "{instance} exited with {status:?} after SIGTERM:\n{}",
            tail(&self.log(instance), 60)
        );
    }

    fn terminate(&mut self, instance: &str) -> Option<ExitStatus> {
        let mut p = self.take(instance);
        let _ = Command::new("kill").args(["-TERM", &p.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = p.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Waits up to `timeout` for `instance` to exit on its own; its status if it did.
    pub fn exited(&mut self, instance: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let (_, p) = self.instances.get_mut(instance)?;
            if let Some(Process(child)) = p.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                *p = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Waits until the current log of `instance` contains `needle`.
    pub fn wait_for(&self, instance: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log(instance).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{instance} never logged {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `instance` restored a partition (it owns one).
    pub fn wait_owns(&self, instance: &str) {
        self.wait_for(instance, "partition restored", Duration::from_secs(90));
    }

    /// Every instance's logs without routine lines (for failure messages).
    pub fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        let mut out = String::new();
        for path in names.iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("INFO") || l.contains("rebalance") || l.contains("restore"))
                .collect();
            let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            out.push_str(&format!("--- {name}\n{}\n", lines.join("\n")));
        }
        out
    }

    /// Thread backtraces of every running instance (gdb, when the machine has it), for
    /// the failure message of a test whose stage stopped making progress.
    pub fn stacks(&self) -> String {
        let mut out = String::new();
        for (name, (_, p)) in &self.instances {
            let Some(Process(child)) = p else { continue };
            let pid = child.id().to_string();
            let bt = Command::new("gdb")
                .args(["-p", &pid, "-batch", "-nx", "-ex", "thread apply all bt 25"])
                .output();
            let text = match bt {
                Ok(o) => String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with("Thread") || l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Err(e) => format!("(no backtrace: gdb: {e})"),
            };
            out.push_str(&format!("--- stacks of {name} (pid {pid})\n{text}\n"));
        }
        out
    }

    /// How often `needle` appears in all logs.
    pub fn count(&self, needle: &str) -> usize {
        std::fs::read_dir(self.dir.path())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .matches(needle)
                            .count()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Stops every running instance cleanly.
    pub fn stop_all(&mut self) {
        let running: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, (_, p))| p.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in running {
            self.stop(&name);
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
