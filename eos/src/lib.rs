//! nearfield-eos: the exactly-once consume → process → produce runtime of the stateful
//! stages (aggregator, emitter), written once.
//!
//! A stage implements [`Stage`] (decode and apply input, flush changelog records and
//! outputs, answer queries) and [`PartitionState`] (one input partition's state, restored
//! from its changelog). The runtime does the rest, the way Kafka Streams' EOS v2 does:
//! consumer-group membership with cooperative rebalancing, one transactional producer per
//! instance whose transactions bind the changelog records, the outputs and the input
//! offsets (with the group metadata, so zombies are fenced), restore of assigned
//! partitions from their co-partitioned changelog on a worker thread while the other
//! partitions go on, rewind after an aborted transaction, typed errors sorted by what to do
//! about them, graceful drain on shutdown, and the metrics and logs of all of it.
//!
//! HTTP handlers never touch the loop's state: they read the [`Status`] the loop publishes
//! and ask it questions through a bounded mailbox ([`Queries`]).
//!
//! # Layout
//! - [`stage`]: the traits a stage implements, [`Input`] and the open transaction [`Emit`].
//! - [`config`]: [`RuntimeConfig`] and the stage's [`Wiring`] (topics).
//! - [`runtime`]: the loop thread: [`spawn`], batching, commit cadence, restarts.
//! - `core`: owned partitions, commit, abort-and-rewind, rebalance callbacks.
//! - `restore`: the restore worker thread.
//! - [`stall`]: lag of the owned partitions and stalled-partition repair, from librdkafka's
//!   statistics.
//! - [`query`]: the published [`Status`] and the query mailbox.
//! - [`plane`]: any instance answers for any partition: the group's owners (from the
//!   coordinator) and their advertised addresses, forwarding and fan-out.
//! - [`http`]: `/readyz` from the status, and [`http::serve`] (server + loop together).
//! - [`repartition`]: a stateless stage on the runtime: a topic copied into one with
//!   another partition count, by key (`nearfield repartition`).
//! - [`clients`]: Kafka client configs and topic metadata.
//! - [`error`]: [`EosError`] and its [`Class`].
//! - [`internal_events`]: metrics and logs.

pub mod clients;
pub mod config;
mod core;
pub mod error;
pub mod http;
pub mod internal_events;
pub mod plane;
pub mod query;
pub mod repartition;
mod restore;
pub mod runtime;
pub mod stage;
pub mod stall;

pub use config::{CreateOnDemand, LoopSettings, RuntimeConfig, Wiring};
pub use error::{Class, EosError, TopicProblem};
pub use plane::{Coverage, Local, Part, Plane, Scope};
pub use query::{PartitionStatus, Queries, QueryError, SharedStatus, Status};
pub use runtime::{Runtime, spawn};
pub use stage::{Emit, Input, Millis, Owned, PartitionState, Stage};
