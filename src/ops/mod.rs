//! Operator tooling: inspect stuck sagas and act on them safely.

pub mod cli;
