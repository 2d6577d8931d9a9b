//! Development and test tooling. **Never for production**: the schema registry
//! stand-in keeps everything in memory, the simulator plays fake participants.

pub mod registry;
pub mod simulator;
