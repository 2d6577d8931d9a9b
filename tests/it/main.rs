//! Integration tests: one binary (fast linking, shared helpers).

mod helpers;
mod orders_api;
