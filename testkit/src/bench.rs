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
}
