//! The data path's log-record budget.

/// How many log records XDP wrote on one CPU in the current one-second
/// window, and how many it held back (see lb-ebpf's `events`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LogBudget {
    /// CLOCK_MONOTONIC ns when the window opened.
    pub window_start_ns: u64,
    pub written: u32,
    pub suppressed: u32,
}
const _: () = assert!(core::mem::size_of::<LogBudget>() == 16);
