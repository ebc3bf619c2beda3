//! What a benchmark phase measures of its own process (CPU seconds and memory, from
//! `/proc/self`, Linux) and the producer its fills write with, so every benchmark tool
//! does both the same way.

/// The producer every benchmark fill and the bare-producer ceiling write with: ingest's
/// durability (acks=all, idempotent) and batching (lz4, 5 ms linger, Java-compatible
/// key partitioning) settings, with a deep queue.
pub fn fill_producer(brokers: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "200000")
        .set("batch.num.messages", "10000");
    c
}

/// (CPU seconds user + system so far, peak RSS in MiB).
pub fn proc_stat() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let cpu = stat_cpu(&stat).map_or(0.0, |(_, cpu)| cpu);
    (cpu, status_mb("VmHWM:").max(status_mb("VmRSS:")))
}

/// The name and CPU seconds (user + system) in a `/proc/…/stat` line.
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Some((stat.get(open + 1..close)?, (tick(11) + tick(12)) / 100.0))
}

/// CPU seconds (user + system) of the process's live threads, summed by thread name,
/// most first, as a JSON object (`{"aggregator":1.52,"rdk:broker1":0.41}`): where a
/// phase's CPU went (threads that exited are only in [`proc_stat`]'s total). Names keep
/// their printable ASCII other than quotes and backslashes, so the object is always JSON.
pub fn threads_cpu_json() -> String {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten();
    for task in tasks {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((name, cpu)) = stat_cpu(&stat) else { continue };
        let name: String = name
            .chars()
            .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\'))
            .collect();
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += cpu,
            None => by_name.push((name, cpu)),
        }
    }
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    let parts: Vec<String> =
        by_name.iter().filter(|(_, c)| *c > 0.0).map(|(n, c)| format!("\"{n}\":{c:.2}")).collect();
    format!("{{{}}}", parts.join(","))
}

/// Resident memory now, in MiB.
pub fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

fn status_mb(name: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_running_process_has_cpu_time_and_memory() {
        // Resident memory read first: the peak read after it can only be as high or
        // higher, whatever the other test threads allocate in between (the other order
        // raced and failed in CI).
        let rss = super::rss_mb();
        let (cpu, peak) = super::proc_stat();
        assert!(cpu >= 0.0);
        assert!(rss > 0.0 && peak > 0.0 && rss <= peak, "rss {rss} MiB, peak {peak} MiB");
    }

    #[test]
    fn thread_cpu_is_a_json_object_naming_this_thread() {
        // Busy until this thread has CPU time on record (ticks of 10 ms), however the
        // scheduler shares the cores with other tests; a wall-clock cap keeps it finite.
        let own = || {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
            super::stat_cpu(&stat).map_or(0.0, |(_, cpu)| cpu)
        };
        let cap = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while own() < 0.02 && std::time::Instant::now() < cap {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let json = super::threads_cpu_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        let name = std::thread::current().name().map(|n| n[..n.len().min(15)].to_string());
        assert!(name.is_some_and(|n| json.contains(&format!("{n:?}:"))), "{json}");
    }
}
