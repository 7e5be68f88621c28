//! `aya::Pod` for every map value, so that userspace reads and writes them.

macro_rules! pod {
    ($($ty:ident),*) => {
        $(
            // SAFETY: a repr(C) struct of plain integers and byte arrays
            // whose padding is explicit (size asserted beside its declaration).
            unsafe impl aya::Pod for super::$ty {}
        )*
    };
}
pod!(
    BackendKey,
    BackendKey6,
    MacKey,
    BackendEntry,
    AgingState,
    GroupReports,
    GroupStatus,
    ServiceKey,
    ServiceKey4,
    Service,
    ServiceBackend,
    Traffic,
    FlowKey,
    Flow,
    FlowSlot,
    FlowBucket,
    FlowSlot6,
    FlowBucket6,
    AuthKey,
    AuthClock,
    LogBudget,
    Departure,
    NextHopError,
    PendingLeave,
    NextHop,
    CoarseClock,
    GsoHandoff
);
