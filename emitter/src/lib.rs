//! Emitter (WIP)
pub mod catalog;
pub mod config;
pub mod forecast;
pub mod state;
