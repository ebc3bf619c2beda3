//! The 3-broker cluster fault tests build on: replication 3, min.insync.replicas 2, one
//! node killed and restarted while an idempotent acks=all producer keeps writing; every
//! acknowledged record is on the topic exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nearfield_testkit::{Isolation, Kafka, read_to_end};
use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

#[derive(Default)]
struct Acks {
    ok: AtomicUsize,
    failed: AtomicUsize,
}
impl ClientContext for &'static Acks {}
impl ProducerContext for &'static Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[test]
fn killing_one_of_three_brokers_loses_no_acknowledged_record() {
    let kafka = Kafka::start(3);
    assert_eq!(kafka.brokers().split(',').count(), 3);
    let topic = Kafka::unique_topic("three");
    kafka.create_topic(&topic, 6, &[]);
    let acks: &'static Acks = Box::leak(Box::default());
    let producer: ThreadedProducer<&'static Acks> = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create_with_context(acks)
        .expect("producer");
    let send = |from: usize, to: usize| {
        for i in from..to {
            let payload = format!("record-{i}");
            producer
                .send(BaseRecord::to(&topic).key(&payload).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue");
        }
    };
    send(0, 2_000);
    producer.flush(Duration::from_secs(30)).expect("flush");
    kafka.kill_node(2);
    send(2_000, 4_000);
    producer.flush(Duration::from_secs(60)).expect("flush with one broker down");
    kafka.start_node(2);
    send(4_000, 6_000);
    producer.flush(Duration::from_secs(60)).expect("flush after restart");
    assert_eq!(acks.failed.load(Ordering::Relaxed), 0);
    assert_eq!(acks.ok.load(Ordering::Relaxed), 6_000);

    let records = read_to_end(&kafka, &topic, Isolation::ReadCommitted, Duration::from_secs(60));
    let mut seen: Vec<usize> = records
        .iter()
        .map(|r| {
            let v = String::from_utf8(r.value.clone().expect("value")).expect("utf8");
            v.trim_start_matches("record-").parse().expect("index")
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..6_000).collect::<Vec<_>>(), "each acknowledged record exactly once");
}
