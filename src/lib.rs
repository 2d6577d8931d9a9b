//! order-saga: the system of record and saga orchestrator for e-commerce orders.
//!
//! See `ARCHITECTURE.md` for the code map and the invariants. In short:
//!
//! * [`domain`] and [`saga`] are the functional core: pure, no I/O, no clock.
//! * [`store`] (MySQL), [`kafka`], [`outbox`], [`timers`], [`http`] and [`ops`]
//!   are the imperative shell around it.
//! * [`app`] is the single composition root.

pub mod app;
pub mod auth;
pub mod cli;
pub mod codec;
pub mod config;
pub mod contracts;
pub mod devtools;
pub mod domain;
pub mod event_time;
pub mod failpoint;
pub mod http;
pub mod kafka;
pub mod ops;
pub mod orchestrator;
pub mod outbox;
pub mod partitioning;
pub mod saga;
pub mod saga_files;
pub mod store;
pub mod telemetry;
pub mod timers;
