//! Exactly-once of both stateful stages under faults, on real Kafka, through one fixture
//! (`nearfield_testkit::Deployment`) and one set of scenarios (`scenarios.rs`): SIGKILLs
//! of instances that own partitions, scaling 1 → 3 → 1, a zombie fencing the producer,
//! and a broker lost on a three-node cluster; and the stateless copy that grows a topic's
//! partition count (`nearfield repartition`) under SIGKILLs and scaling, and the emitters'
//! handover of plan horizons to a deployment on the grown topics. After each, the
//! stage's outputs equal the ground truth exactly; any instance answers any key
//! meanwhile. Then what the runtime promises besides: a partition restoring does not stop
//! the others, and a permanent error stops the stage, naming its cause.

mod aggregator;
mod emitter;
mod handover;
mod queries;
mod repartition;
mod runtime;
mod scenarios;

use std::sync::{Mutex, MutexGuard};

use aggregator::Aggregator;
use emitter::{Emitter, PopularSku};
use nearfield_testkit::Kafka;
use repartition::Repartition;

/// One at a time: each drives brokers and several stage processes, and on two cores
/// running them together starves a 3-node cluster's failover.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn aggregator_sigkill_at_random_moments_neither_loses_nor_double_counts() {
    let _s = serial();
    scenarios::sigkill::<Aggregator>(Kafka::shared());
}

#[test]
fn aggregator_scaling_one_to_three_to_one_moves_state_with_partitions() {
    let _s = serial();
    scenarios::scale_out_and_in::<Aggregator>(Kafka::shared());
}

#[test]
fn aggregator_fenced_by_a_zombie_restarts_from_the_last_commit() {
    let _s = serial();
    scenarios::zombie_fencing::<Aggregator>(Kafka::shared());
}

#[test]
fn aggregator_losing_a_broker_mid_stream_changes_nothing() {
    let _s = serial();
    scenarios::broker_loss::<Aggregator>();
}

#[test]
fn emitter_sigkill_at_random_moments_neither_loses_nor_repeats_a_decision() {
    let _s = serial();
    scenarios::sigkill::<Emitter>(Kafka::shared());
}

#[test]
fn emitter_with_a_sku_in_20000_grids_commits_small_records_and_survives_sigkill() {
    let _s = serial();
    scenarios::sigkill::<PopularSku>(Kafka::shared());
}

#[test]
fn emitter_scaling_one_to_three_to_one_moves_state_with_partitions() {
    let _s = serial();
    scenarios::scale_out_and_in::<Emitter>(Kafka::shared());
}

#[test]
fn emitter_fenced_by_a_zombie_restarts_from_the_last_commit() {
    let _s = serial();
    scenarios::zombie_fencing::<Emitter>(Kafka::shared());
}

#[test]
fn emitter_losing_a_broker_mid_stream_changes_nothing() {
    let _s = serial();
    scenarios::broker_loss::<Emitter>();
}

#[test]
fn aggregator_any_instance_answers_any_key_through_one_three_one() {
    let _s = serial();
    queries::any_instance_answers_any_key(Kafka::shared());
}

#[test]
fn a_partition_restoring_does_not_stop_the_others() {
    let _s = serial();
    runtime::restoring_does_not_block(Kafka::shared());
}

#[test]
fn a_deleted_output_topic_stops_the_stage_naming_it() {
    let _s = serial();
    runtime::deleted_output_is_fatal(Kafka::shared());
}

#[test]
fn repartition_sigkill_at_random_moments_copies_each_record_once_by_key() {
    let _s = serial();
    scenarios::sigkill::<Repartition>(Kafka::shared());
}

#[test]
fn repartition_scaling_one_to_three_to_one_copies_each_record_once_by_key() {
    let _s = serial();
    scenarios::scale_out_and_in::<Repartition>(Kafka::shared());
}

#[test]
fn repartition_refuses_a_compacted_source() {
    let _s = serial();
    repartition::compacted_source_is_refused(Kafka::shared());
}

#[test]
fn a_topic_grown_by_repartition_aggregates_exactly() {
    let _s = serial();
    repartition::grown_topic_aggregates_exactly(Kafka::shared());
}

#[test]
fn emitters_hand_plan_horizons_over_to_a_grown_deployment() {
    let _s = serial();
    handover::handover_gives_every_plan_key_one_chain(Kafka::shared());
}
