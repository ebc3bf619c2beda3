//! Emitter: from closed demand windows to production-plan signals (SPEC §7).
//!
//! Not built yet: this crate holds the place the emitter stage takes in the workspace
//! (reading `demand.v1` with read_committed and the catalog, writing `PlanSignal`s to
//! `plan.<supplier_id>.v1` exactly once). See `docs/ARCHITECTURE.md`.
