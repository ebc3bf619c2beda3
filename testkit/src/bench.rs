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
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ((tick(11) + tick(12)) / 100.0, status_mb("VmHWM:").max(status_mb("VmRSS:")))
}

/// CPU seconds (user + system) of the process's live threads, summed by thread name,
/// most first, as a JSON object (`{"aggregator":1.52,"rdk:broker1":0.41}`): where a
/// phase's CPU went (threads that exited are only in [`proc_stat`]'s total).
pub fn threads_cpu_json() -> String {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten();
    for task in tasks {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let cpu = (tick(11) + tick(12)) / 100.0;
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += cpu,
            None => by_name.push((name, cpu)),
        }
    }
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    let parts: Vec<String> = by_name
        .iter()
        .filter(|(_, c)| *c > 0.0)
        .map(|(n, c)| format!("{:?}:{c:.2}", n.replace(['"', '\\'], "")))
        .collect();
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
        let (cpu, peak) = super::proc_stat();
        assert!(cpu >= 0.0);
        assert!(peak > 0.0 && super::rss_mb() > 0.0 && super::rss_mb() <= peak);
    }

    #[test]
    fn thread_cpu_is_a_json_object_naming_this_thread() {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(30);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let json = super::threads_cpu_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        let name = std::thread::current().name().map(|n| n[..n.len().min(15)].to_string());
        assert!(name.is_some_and(|n| json.contains(&format!("{n:?}:"))), "{json}");
    }
}
