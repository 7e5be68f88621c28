//! The agent's decapsulation program (protocol §7).

/// Most LBs whose IPIP an agent accepts.
pub const MAX_DECAP_LBS: u32 = 64;

/// The maps of the agent's decapsulation program, declared once like
/// [`program_maps!`] (same row syntax).
#[macro_export]
macro_rules! decap_maps {
    ($callback:ident) => {
        $callback! {
            /// LB addresses (network order) learned from queries: IPIP from
            /// them is stripped. Written by backend-agent.
            DECAP_LBS / lbs: HashMap<[u8; 4], u8>[$crate::MAX_DECAP_LBS];
            /// The backend's own address (network order), slot 0: only IPIP
            /// to it is stripped. Written by backend-agent.
            DECAP_LOCAL / local: Array<[u8; 4]>[1];
            /// Packet counters (per CPU), indexed by [`DecapCounter`]($crate::DecapCounter).
            DECAP_COUNTERS / counters: PerCpuArray<u64>[$crate::DecapCounter::ALL.len() as u32];
        }
    };
}
