//! How a VIP packet reaches its backend: layer 2 or IPIP, next hops
//! from the kernel's FIB, and the GSO handoff.

/// How client traffic reaches a backend (protocol §7).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardingMode {
    /// Layer-2 direct server return: backends on the LB's segment only.
    L2 = 0,
    /// L2 for backends on the LB's segment, IPIP for the others.
    Auto = 1,
    /// IPIP to every backend.
    Ipip = 2,
}

impl ForwardingMode {
    /// Whether traffic to `backend` is wrapped in IPIP, for an LB at
    /// `lb_addr` whose segment has netmask `mask` (all network order).
    #[inline(always)]
    pub fn wraps(self, backend: [u8; 4], lb_addr: [u8; 4], mask: [u8; 4]) -> bool {
        match self {
            ForwardingMode::L2 => false,
            ForwardingMode::Ipip => true,
            ForwardingMode::Auto => {
                (u32::from_ne_bytes(backend) ^ u32::from_ne_bytes(lb_addr))
                    & u32::from_ne_bytes(mask)
                    != 0
            }
        }
    }

    /// [`Self::wraps`] for an IPv6 backend, LB address and netmask.
    #[inline(always)]
    pub fn wraps6(self, backend: [u8; 16], lb_addr: [u8; 16], mask: [u8; 16]) -> bool {
        match self {
            ForwardingMode::L2 => false,
            ForwardingMode::Ipip => true,
            ForwardingMode::Auto => {
                (u128::from_ne_bytes(backend) ^ u128::from_ne_bytes(lb_addr))
                    & u128::from_ne_bytes(mask)
                    != 0
            }
        }
    }

    /// The mode stored as `raw` (anything unknown is L2, which wraps nothing).
    #[inline(always)]
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            1 => ForwardingMode::Auto,
            2 => ForwardingMode::Ipip,
            _ => ForwardingMode::L2,
        }
    }
}

/// Backends with a next-hop error remembered at once.
pub const MAX_NEXT_HOP_ERRORS: u32 = 1024;

/// Why the kernel's FIB gave no next hop toward a backend, when XDP last
/// asked: `result` is the `BPF_FIB_LKUP_RET_*` code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHopError {
    /// CLOCK_MONOTONIC ns of the last packet dropped for it.
    pub last_ns: u64,
    pub result: u32,
    /// Packets dropped for it since the entry was created.
    pub drops: u32,
}
const _: () = assert!(core::mem::size_of::<NextHopError>() == 16);

/// A next hop toward an IPIP backend from the kernel's FIB, used by XDP
/// for [`NEXT_HOP_CACHE_NS`] after the lookup for packets no larger than
/// one that the lookup's MTU check let through.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// CLOCK_MONOTONIC_COARSE ns of the lookup as XDP read it in that
    /// tick (read by XDP only).
    pub resolved_ns: u64,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// The largest outer packet (bytes) the lookups let through.
    pub fits: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<NextHop>() == 24);

/// What XDP leaves in its CPU's slot of `GSO_HANDOFFS` for the GSO program
/// when it passes a GSO super-packet: the backend and next hop it chose.
/// XDP cannot wrap such a packet (it would have to split it); tc can, with
/// `bpf_skb_adjust_room`, which keeps the packet's GSO state valid. Generic
/// XDP and the tc ingress hook run one after the other for a packet, on
/// one CPU, so the slot is the packet's own when its first bytes match;
/// a slot rather than the packet's metadata because some kernels refuse
/// `bpf_xdp_adjust_meta` (measured: Linux 6.18.44 of these machines).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GsoHandoff {
    /// The super-packet's first 40 bytes after its MAC header (an IPv6
    /// header, or an IPv4 one and the start of its TCP header), as XDP
    /// saw them: tc wraps only the packet that matches them.
    pub ip_header: [u8; 40],
    /// The backend (network order; IPv4-mapped for an IPv4 backend): the
    /// outer header's destination, whose family is the outer header's.
    pub backend: [u8; 16],
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// What the outer header wraps: 4 (IPv4) or 41 (IPv6).
    pub inner_proto: u8,
    /// The client's TOS or traffic class, and DF (IPv4 clients), copied
    /// to the outer header.
    pub tos: u8,
    pub dont_fragment: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<GsoHandoff>() == 72);

impl Default for GsoHandoff {
    /// An empty slot: it matches no packet XDP handed over.
    fn default() -> Self {
        Self {
            ip_header: [0; 40],
            backend: [0; 16],
            dmac: [0; 6],
            smac: [0; 6],
            inner_proto: 0,
            tos: 0,
            dont_fragment: 0,
            _pad: 0,
        }
    }
}

/// What a program with 16-byte backend addresses leaves in its CPU's slot
/// of `WRAP_HANDOFFS` before it tail-calls the wrap program
/// (`WRAP_PROGRAM_NAME`) for a packet to wrap in IP-in-IP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WrapHandoff {
    /// The backend (IPv4-mapped for an IPv4 backend): the outer header's
    /// destination and family.
    pub backend: [u8; 16],
    /// For a second chance, the previous backend the inner header names
    /// (of the backend's family); all zero otherwise.
    pub previous: [u8; 16],
    /// The backend's MAC: where a second chance to a backend on the LB's
    /// segment goes.
    pub mac: [u8; 6],
    /// Whether the packet started its flow (which counter it moves).
    pub new_flow: u8,
    /// Whether the backend is on the LB's segment (a second chance goes
    /// to its MAC, not through the FIB).
    pub on_segment: u8,
}
const _: () = assert!(core::mem::size_of::<WrapHandoff>() == 40);

/// How long XDP trusts a next hop from the FIB: a changed route,
/// neighbour or MTU applies to IPIP traffic within this time.
pub const NEXT_HOP_CACHE_NS: u64 = 100_000_000;

/// What a `BPF_FIB_LKUP_RET_*` code means for an operator.
pub const fn fib_result_name(result: u32) -> &'static str {
    match result {
        1 => "blackhole route",
        2 => "unreachable route",
        3 => "prohibited route",
        4 => "not forwarded (no route out of the LB's interface)",
        5 => "forwarding disabled",
        6 => "unsupported lightweight tunnel",
        7 => "next hop not resolved (no neighbour entry)",
        9 => "no source address",
        _ => "other FIB error",
    }
}
