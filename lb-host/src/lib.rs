//! What only the binaries need, beside the kernel/user contract in
//! `lb-common`: the shared `main` and CLI parsers, the raw IGMP socket, and
//! facts about the host (privileges, interfaces, bpffs, clocks), and the
//! `status --json` schema that lb-user writes and the tests read.
pub mod cli;
pub mod igmp_socket;
pub mod kernel;
pub mod metrics_server;
pub mod mld_socket;
pub mod routed_socket;
pub mod service_manager;
pub mod status;
pub mod system;
