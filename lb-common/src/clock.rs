//! XDP's reading of the coarse clock.

/// A reading of the coarse clock and the tick (jiffies) it was taken in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CoarseClock {
    pub jiffies: u64,
    /// CLOCK_MONOTONIC_COARSE ns.
    pub ns: u64,
}
const _: () = assert!(core::mem::size_of::<CoarseClock>() == 16);

/// Most XDP's coarse readings lag CLOCK_MONOTONIC: two of the longest
/// timer ticks (HZ 100), because jiffies advance just before the coarse
/// clock at each tick and XDP reads the clock once per jiffy.
pub const COARSE_LAG_MAX_NS: u64 = 2 * 10_000_000;
