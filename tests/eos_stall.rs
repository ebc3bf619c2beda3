//! The exactly-once runtime's stalled-partition repair (`nearfield_eos::stall`) against a
//! partition real librdkafka does not fetch: a consumer owns two partitions with records
//! waiting, one of them left paused (what a stall looks like from outside: no fetch, no
//! progress; librdkafka's statistics show it "active" at position 0 with no last stable
//! offset, as it never fetched it). The watch finds that one, and only that one, the
//! broker's watermarks confirm records wait, and the re-seek makes every record of it read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearfield_eos::stall::{Sample, Watch, records_wait, reseek, sample_of};
use nearfield_testkit::Kafka;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};

const RECORDS: i64 = 200;

struct Stats {
    topic: String,
    last: Arc<Mutex<Option<Sample>>>,
}

impl ClientContext for Stats {
    fn stats(&self, stats: Statistics) {
        let sample = sample_of(&stats, &self.topic);
        *self.last.lock().expect("stats lock") = Some(sample);
    }
}

impl ConsumerContext for Stats {}

#[test]
fn a_partition_librdkafka_does_not_fetch_is_found_and_read_after_a_reseek() {
    let kafka = Kafka::shared();
    let topic = Kafka::unique_topic("eos-stall");
    kafka.create_topic(&topic, 2, &[]);
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.client_config().create().expect("producer");
    for p in 0..2 {
        for i in 0..RECORDS {
            let k = i.to_string();
            producer
                .send(BaseRecord::to(&topic).partition(p).key(&k).payload(&k))
                .map_err(|(e, _)| e)
                .expect("send");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let last = Arc::new(Mutex::new(None));
    let consumer: BaseConsumer<Stats> = kafka
        .client_config()
        .set("group.id", Kafka::unique_topic("eos-stall-group"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Samples 1 s apart: a re-seek to the beginning waits for its offset lookup behind
        // the broker connection's fetch long-poll (up to fetch.wait.max.ms, 500 ms) before
        // the partition fetches, and three quiet samples must be longer than that.
        .set("statistics.interval.ms", "1000")
        .create_with_context(Stats { topic: topic.clone(), last: last.clone() })
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut one = TopicPartitionList::new();
    one.add_partition(&topic, 1);
    consumer.pause(&one).expect("pause");

    let mut watch = Watch::default();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut stalled = Vec::new();
    let start = Instant::now();
    while next.get(&0) != Some(&RECORDS) || next.get(&1) != Some(&RECORDS) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every record read: next offsets {next:?}, stalls found {stalled:?}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            let m = m.expect("record");
            next.insert(m.partition(), m.offset() + 1);
        }
        let Some(sample) = last.lock().expect("stats lock").take() else { continue };
        let owned: Vec<(i32, Option<i64>)> = (0..2).map(|p| (p, next.get(&p).copied())).collect();
        for p in watch.observe(&owned, &sample) {
            let f = &sample[&p];
            if !records_wait(&consumer, &topic, p, f, next.get(&p).copied()).expect("watermarks") {
                continue;
            }
            stalled.push(p);
            let at = next.get(&p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            reseek(&consumer, &topic, p, at).expect("reseek");
        }
    }
    assert_eq!(stalled, vec![1], "the paused partition, once, and nothing else");
}
