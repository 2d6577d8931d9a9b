//! Development and test tooling. **Never for production**: the schema registry
//! stand-in keeps everything in memory (compiled only with the `dev-registry`
//! feature: `scripts/dev`, tests, benches and examples), the simulator plays
//! fake participants.

#[cfg(feature = "dev-registry")]
pub mod idp;
#[cfg(feature = "dev-registry")]
pub mod registry;
pub mod simulator;
