//! What every nearfield stage shares.
//!
//! # Layout
//! - [`kafka`]: connection settings with librdkafka pass-through, topic names, and the
//!   client-config builder every stage starts from.
//! - [`metrics`]: metric constructors for the stages' `internal_events` modules.
//! - [`shutdown`]: the cancellation-token tree that stops a stage.
//! - [`catalog`]: the supplier catalog (file + `catalog.v1`): the emitter's planning
//!   data, ingest's SKU check, the live page's categories.
//! - [`http`]: `/metrics`, `/healthz` and readiness shared by the stages' HTTP servers.
//! - [`serve`]: serving a router to untrusted clients (connection cap, head timeout and
//!   size cap, graceful drain): ingest's device port.
//! - [`jsonl`]: registry files in JSON lines (stores, catalog).
//! - [`ids`]: the identifier rule (event ids, SKUs, store and device ids).
//! - [`stores`]: the store registry file, its `stores.v1` follower, and grids (H3).
//! - [`time`]: wall-clock milliseconds.
//! - [`alloc`]: the memory allocator's settings, in place before the first allocation.

pub mod alloc;
pub mod catalog;
pub mod http;
pub mod ids;
pub mod jsonl;
pub mod kafka;
pub mod metrics;
pub mod operator;
pub mod serve;
pub mod shutdown;
pub mod stores;
pub mod time;
