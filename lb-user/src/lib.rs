//! The LB control plane as a library: the binary and the tests share it.
pub mod aging;
pub mod batch;
pub mod liveness;
pub mod mapped;
pub mod maps;
pub use lb_host::system;
pub mod config;
pub mod control;
pub mod forwarding;
pub mod instance;
pub mod leaves;
pub mod maglev;
pub mod metrics;
pub mod next_hop;
pub mod status;
