//! The aggregator creates its changelog topic with the configs a changelog of bucket
//! chunks needs (compaction that keeps up with keys replaced every commit, room for the
//! largest chunk), on a real broker.

use std::collections::HashMap;

mod support;

use nearfield_aggregator::AggregateConfig;
use nearfield_common::shutdown::CancellationToken;
use nearfield_testkit::Kafka;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changelog_topic_is_created_compacted_with_its_configs() {
    let kafka = Kafka::shared();
    let id = Kafka::unique_topic("topics");
    let settings = support::settings(kafka, &id);
    let changelog = settings.topics.aggregator_changelog.clone();
    let config = AggregateConfig {
        exactly_once: nearfield_eos::LoopSettings {
            listen: "127.0.0.1:0".parse().expect("addr"),
            group_id: format!("agg-{id}"),
            instance_id: Some("topics".into()),
            ..nearfield_eos::LoopSettings::default()
        },
        follow_stores_topic: false,
        ..AggregateConfig::default()
    };
    let stop = CancellationToken::new();
    let running = nearfield_aggregator::start(config, settings, stop.clone()).await.expect("start");
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config().create().expect("admin client");
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&changelog)], &AdminOptions::new())
        .await
        .expect("describe");
    let resource = described.into_iter().next().expect("one resource").expect("described");
    let got: HashMap<String, String> =
        resource.entries.into_iter().filter_map(|e| e.value.map(|v| (e.name, v))).collect();
    for (name, want) in [("cleanup.policy", "compact")]
        .into_iter()
        .chain(nearfield_common::kafka::CHANGELOG_CONFIGS)
    {
        assert_eq!(got.get(name).map(String::as_str), Some(want), "{changelog}: {name}");
    }
    stop.cancel();
    let _ = running.done.await;
}
