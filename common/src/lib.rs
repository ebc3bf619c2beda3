//! What every nearfield stage shares.
//!
//! # Layout
//! - [`kafka`]: connection settings with librdkafka pass-through, topic names, and the
//!   client-config builder every stage starts from.
//! - [`shutdown`]: the cancellation-token tree that stops a stage.
//! - [`http`]: `/metrics`, `/healthz` and readiness shared by the stages' HTTP servers.
//! - [`time`]: wall-clock milliseconds.

pub mod http;
pub mod kafka;
pub mod shutdown;
pub mod time;
