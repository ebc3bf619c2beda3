//! Aggregator: exactly-once windowed demand per grid × SKU (SPEC §6).
//!
//! Not built yet: this crate holds the place the aggregator stage takes in the workspace
//! (a consumer-group member on `sales.v1` and `heartbeats.v1`, producing `DemandWindow`s to
//! `demand.v1` in Kafka transactions with a co-partitioned changelog). See
//! `docs/ARCHITECTURE.md` for the design it will follow.
