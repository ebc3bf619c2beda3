//! The fault scenarios, written once for any exactly-once stage: a [`Harness`] knows how
//! to deploy its stage, feed it known input and compare its outputs with ground truth;
//! each scenario is what happens to the deployment meanwhile.

use std::time::Duration;

use nearfield_testkit::{Deployment, Kafka};
use rdkafka::producer::{BaseProducer, Producer};

/// What a scenario needs of a stage.
pub trait Harness: Sized {
    /// The stage's name (`aggregator`, `emitter`), as its logs say it.
    const STAGE: &'static str;
    /// Pause before a SIGKILL, drawn from `min..min + spread`.
    const KILL_PAUSE_MS: (u64, u64);

    /// Topics on `kafka` with `partitions` partitions, and the stage's deployment.
    fn setup(kafka: &Kafka, partitions: i32) -> (Self, Deployment);
    /// Starts writing input in the background.
    fn feed(&mut self, kafka: &Kafka);
    /// Stops feeding (or waits until the finite input is written).
    fn stop_feeding(&mut self);
    /// Waits until the outputs (read_committed) equal the ground truth: none lost, none
    /// repeated. Panics with the deployment's logs otherwise; returns a summary.
    fn assert_exact(&self, kafka: &Kafka, d: &Deployment) -> String;
    /// The consumer group (the transactional id of instance `a` is `<group>-a`).
    fn group(&self) -> String;
}

/// A deterministic sequence of pauses.
struct Pauses(u64);

impl Pauses {
    fn next(&mut self, (min, spread): (u64, u64)) -> Duration {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Duration::from_millis(min + (self.0 >> 33) % spread)
    }
}

/// Six SIGKILLs, each of an instance that owns partitions, one of them of a second
/// instance that joined the group and took partitions (and their state).
pub fn sigkill<H: Harness>(kafka: &Kafka) {
    let (mut h, mut d) = H::setup(kafka, 3);
    h.feed(kafka);
    d.start("a");
    let mut pauses = Pauses(0x2545_f491);
    for round in 1..=6 {
        d.wait_owns("a");
        std::thread::sleep(pauses.next(H::KILL_PAUSE_MS));
        if round == 2 {
            d.start("b");
            d.wait_owns("b");
            std::thread::sleep(pauses.next(H::KILL_PAUSE_MS));
            d.kill("b");
        }
        d.restart("a");
    }
    std::thread::sleep(Duration::from_secs(2));
    h.stop_feeding();
    let summary = h.assert_exact(kafka, &d);
    eprintln!("{}: 7 SIGKILLs: {summary}", H::STAGE);
    d.stop("a");
}

/// One instance, then three (state moves with the partitions), then one again.
pub fn scale_out_and_in<H: Harness>(kafka: &Kafka) {
    let (mut h, mut d) = H::setup(kafka, 6);
    h.feed(kafka);
    d.start("a");
    std::thread::sleep(Duration::from_secs(5));
    d.start("b");
    d.start("c");
    d.wait_owns("b");
    d.wait_owns("c");
    std::thread::sleep(Duration::from_secs(4));
    d.stop("b");
    d.stop("c");
    std::thread::sleep(Duration::from_secs(5));
    h.stop_feeding();
    let summary = h.assert_exact(kafka, &d);
    eprintln!(
        "{}: 1 → 3 → 1: {summary}; {} aborted transactions, {} rewinds, {} restarts",
        H::STAGE,
        d.count("transaction aborted"),
        d.count("recovered from the last commit"),
        d.count("loop failed")
    );
    d.stop("a");
}

/// A zombie takes instance `a`'s transactional id (as a stale copy of the instance would):
/// `a`'s producer is fenced, its transaction fails, and it starts over from its last
/// commit, fencing the zombie in turn, without losing or repeating anything.
pub fn zombie_fencing<H: Harness>(kafka: &Kafka) {
    let (mut h, mut d) = H::setup(kafka, 3);
    h.feed(kafka);
    d.start("a");
    d.wait_owns("a");
    std::thread::sleep(Duration::from_secs(4));
    let zombie: BaseProducer = kafka
        .client_config()
        .set("transactional.id", format!("{}-a", h.group()))
        .create()
        .expect("zombie producer");
    zombie.init_transactions(Duration::from_secs(30)).expect("the zombie fences the stage");
    std::thread::sleep(Duration::from_secs(6));
    h.stop_feeding();
    let summary = h.assert_exact(kafka, &d);
    let failed = format!("{} loop failed", H::STAGE);
    assert!(d.count(&failed) > 0, "the fenced producer was never noticed:\n{}", d.logs());
    eprintln!("{}: fenced once: {summary}", H::STAGE);
    d.stop("a");
}

/// A broker of three is SIGKILLed mid-stream.
pub fn broker_loss<H: Harness>() {
    let cluster = Kafka::start(3);
    let (mut h, mut d) = H::setup(&cluster, 3);
    h.feed(&cluster);
    d.start("a");
    d.wait_owns("a");
    std::thread::sleep(Duration::from_secs(4));
    cluster.kill_node(2);
    std::thread::sleep(Duration::from_secs(10));
    h.stop_feeding();
    let summary = h.assert_exact(&cluster, &d);
    eprintln!(
        "{}: a broker lost: {summary}; {} aborted transactions, {} restarts",
        H::STAGE,
        d.count("transaction aborted"),
        d.count("loop failed")
    );
    d.stop("a");
    cluster.start_node(2);
}
