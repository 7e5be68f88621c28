//! The agent's decapsulation program (protocol §7, §9).

/// Most LBs whose IPIP an agent accepts.
pub const MAX_DECAP_LBS: u32 = 64;

/// The maps of the agent's decapsulation program, declared once like
/// [`program_maps!`] (same row syntax).
#[macro_export]
macro_rules! decap_maps {
    ($callback:ident) => {
        $callback! {
            /// IPv4 LB addresses (network order) learned from queries:
            /// IP-in-IP from them is stripped. Written by backend-agent.
            DECAP_LBS / lbs: HashMap<[u8; 4], u8>[$crate::MAX_DECAP_LBS];
            /// The backend's own IPv4 address (network order), slot 0: only
            /// IP-in-IP to it is stripped. Written by backend-agent.
            DECAP_LOCAL / local: Array<[u8; 4]>[1];
            /// IPv6 LB addresses learned from MLD queries (protocol §9).
            DECAP_LBS6 / lbs6: HashMap<[u8; 16], u8>[$crate::MAX_DECAP_LBS];
            /// The backend's own IPv6 address, slot 0 (all zero: none).
            DECAP_LOCAL6 / local6: Array<[u8; 16]>[1];
            /// Packet counters (per CPU), indexed by [`DecapCounter`]($crate::DecapCounter).
            DECAP_COUNTERS / counters: PerCpuArray<u64>[$crate::DecapCounter::ALL.len() as u32];
        }
    };
}
