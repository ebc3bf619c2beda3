//! What the aggregator's integration tests share: one test's topics on the shared broker.

use nearfield_common::kafka::{KafkaSettings, Topics};
use nearfield_testkit::Kafka;

/// Topics of one test (named after `id`), one partition each, on `kafka`.
pub fn settings(kafka: &Kafka, id: &str) -> KafkaSettings {
    let t = |n: &str| format!("{n}-{id}");
    let topics = Topics {
        sales: t("sales"),
        heartbeats: t("hb"),
        dlq: t("dlq"),
        late: t("late"),
        demand: t("demand"),
        coverage: t("coverage"),
        stores: t("stores"),
        catalog: t("catalog"),
        aggregator_changelog: t("changelog"),
        ..Topics::default()
    };
    KafkaSettings {
        brokers: kafka.brokers().to_string(),
        topics,
        partitions: 1,
        ..KafkaSettings::default()
    }
}
