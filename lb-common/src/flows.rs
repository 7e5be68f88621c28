//! The connection table: flow keys, their hash and buckets, and slots.

#[cfg(test)]
use crate::IPPROTO_TCP;

/// Default capacity of the connection table.
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;

/// A client flow (5-tuple), as seen arriving at the LB.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Ports in network order, as on the wire.
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// The backend a flow is pinned to, and what XDP last found of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flow {
    /// The row (`SERVICE_BACKENDS`) of the backend and service: where the
    /// backend's address is, and where the flow's traffic is counted.
    pub row: u32,
    /// The backend's MAC when the flow was last checked against the
    /// server list.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// The `BACKEND_EPOCH` count read before that check: while it is
    /// current, the backend is still registered, up and at `mac`, and its
    /// row names it.
    pub epoch: u32,
}
const _: () = assert!(core::mem::size_of::<Flow>() == 16);

impl Flow {
    /// A flow pinned to the backend of `row` at `mac`, checked under count
    /// `epoch`.
    pub const fn new(row: u32, mac: [u8; 6], epoch: u32) -> Self {
        Self {
            row,
            mac,
            _pad: [0; 2],
            epoch,
        }
    }
}

impl FlowKey {
    /// The key as two words (addresses; ports and protocol), as a
    /// connection-table slot stores it: never all zero (the protocol is not).
    #[inline(always)]
    pub fn words(&self) -> [u64; 2] {
        [
            u64::from(u32::from_ne_bytes(self.src)) << 32 | u64::from(u32::from_ne_bytes(self.dst)),
            u64::from(u16::from_ne_bytes(self.src_port)) << 24
                | u64::from(u16::from_ne_bytes(self.dst_port)) << 8
                | u64::from(self.proto),
        ]
    }
}

/// An IPv6 client flow's key as five words (each address in two; ports
/// and protocol), as a slot of `FLOWS6` stores it (never all zero), from
/// the source and destination addresses as they lie in the IPv6 header
/// (32 bytes in a row): XDP reads them off the packet once, each word as
/// it goes, rather than copying the addresses first (byte by byte, whose
/// 32 live values spilled to the stack).
#[inline(always)]
pub fn flow_words6(addrs: &[u8; 32], src_port: [u8; 2], dst_port: [u8; 2], proto: u8) -> [u64; 5] {
    let word = |i: usize| {
        u64::from_ne_bytes([
            addrs[i],
            addrs[i + 1],
            addrs[i + 2],
            addrs[i + 3],
            addrs[i + 4],
            addrs[i + 5],
            addrs[i + 6],
            addrs[i + 7],
        ])
    };
    [
        word(0),
        word(8),
        word(16),
        word(24),
        u64::from(u16::from_ne_bytes(src_port)) << 24
            | u64::from(u16::from_ne_bytes(dst_port)) << 8
            | u64::from(proto),
    ]
}

/// The 64-bit flow hash: its low half indexes the Maglev table
/// ([`flow_hash`]); each half names one of the flow's two buckets in the
/// connection table ([`flow_buckets_of`]).
#[inline(always)]
pub fn flow_hash64(key: &FlowKey) -> u64 {
    let [addrs, rest] = key.words();
    splitmix64(addrs ^ rest.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// [`flow_hash64`] of an IPv6 flow's words ([`flow_words6`]): folded by
/// multiply and rotate, then mixed once.
#[inline(always)]
pub fn flow_hash64_words6(words: &[u64; 5]) -> u64 {
    let [a, b, c, d, rest] = *words;
    let fold = |h: u64, w: u64| (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    splitmix64(fold(fold(fold(fold(a, b), c), d), rest))
}

/// splitmix64's finalizer.
#[inline(always)]
const fn splitmix64(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The flow hash XDP indexes the Maglev table with. Shared so that tests
/// can predict where a flow lands.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    flow_hash64(key) as u32
}

/// Ways (slots) per bucket of the connection table.
pub const FLOW_WAYS: usize = 4;
// XDP masks a way's index with FLOW_WAYS - 1.
const _: () = assert!(FLOW_WAYS.is_power_of_two());

/// Slots per flow of the connection table's capacity: with two buckets
/// per flow, a table half full evicts almost no flow early (measured in
/// lb-user's forwarding tests), as an LRU hash map of that capacity.
pub const FLOW_SLOTS_PER_FLOW: u32 = 2;

/// Buckets of a connection table for `max_flows` flows.
pub const fn flow_buckets(max_flows: u32) -> u32 {
    (max_flows.saturating_mul(FLOW_SLOTS_PER_FLOW)).div_ceil(FLOW_WAYS as u32)
}

/// The two buckets (indices among `buckets`) a flow of hash `hash` may
/// live in: a new flow takes the one with room, which keeps the table
/// nearly full before a flow is evicted early. A multiply and a shift
/// each: no division, any count.
#[inline(always)]
pub fn flow_buckets_of(hash: u64, buckets: u32) -> [u32; 2] {
    let index = |half: u64| ((half * u64::from(buckets)) >> 32) as u32;
    [index(hash >> 32), index(hash & 0xffff_ffff)]
}

/// The check of a slot holding a flow of hash `hash` pinned to the backend
/// of `row` at `mac`: a slot torn by two CPUs writing it at once (its key
/// from one flow, its row from another) fails it, and counts as no entry.
#[inline(always)]
pub fn flow_check(hash: u64, row: u32, mac: [u8; 6]) -> u32 {
    // The MAC in the low 48 bits, the whole row in the high 32: they
    // overlap in 16 bits, so only a change of both at once, in step,
    // could leave the word as it was.
    let mac = u64::from(u16::from_ne_bytes([mac[0], mac[1]])) << 32
        | u64::from(u32::from_ne_bytes([mac[2], mac[3], mac[4], mac[5]]));
    let row = u64::from(row) << 32;
    splitmix64(hash ^ mac ^ row) as u32
}

/// One slot of a connection table whose keys are `W` words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSlotOf<const W: usize> {
    /// [`FlowKey::words`] (or [`flow_words6`]) of the flow; all zero
    /// for an empty slot.
    pub key: [u64; W],
    pub flow: Flow,
    /// Low 31 bits of jiffies when the flow was last used, updated at
    /// most every [`FLOW_USED_TICKS`], and [`FLOW_ESTABLISHED`] once a
    /// packet other than a SYN has used it: a new flow takes an empty slot of
    /// its buckets, else their least recently used that never got past its
    /// handshake, else their least recently used.
    pub used: u32,
    /// [`flow_check`] of the key, row and MAC.
    pub check: u32,
}
/// A slot of the IPv4 connection table (`FLOWS`).
pub type FlowSlot = FlowSlotOf<2>;
/// A slot of the IPv6 connection table (`FLOWS6`).
pub type FlowSlot6 = FlowSlotOf<5>;
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 40);
const _: () = assert!(core::mem::size_of::<FlowSlot6>() == 64);

impl<const W: usize> Default for FlowSlotOf<W> {
    fn default() -> Self {
        Self {
            key: [0; W],
            flow: Flow::default(),
            used: 0,
            check: 0,
        }
    }
}

impl<const W: usize> FlowSlotOf<W> {
    /// Whether the slot holds no flow.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.key == [0; W]
    }
}

/// One bucket of a connection table: [`FLOW_WAYS`] slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowBucketOf<const W: usize> {
    pub ways: [FlowSlotOf<W>; FLOW_WAYS],
}
/// A bucket of the IPv4 connection table.
pub type FlowBucket = FlowBucketOf<2>;
/// A bucket of the IPv6 connection table.
pub type FlowBucket6 = FlowBucketOf<5>;
const _: () = assert!(core::mem::size_of::<FlowBucket>() == 160);
const _: () = assert!(core::mem::size_of::<FlowBucket6>() == 256);

impl<const W: usize> Default for FlowBucketOf<W> {
    fn default() -> Self {
        Self {
            ways: [FlowSlotOf::default(); FLOW_WAYS],
        }
    }
}

/// The bit of a slot's `used` that says a packet other than a SYN used the
/// flow: a flow that got past its handshake. New flows evict flows that
/// never did first, so a SYN flood that fills the table pushes out its
/// own entries, not established connections.
pub const FLOW_ESTABLISHED: u32 = 1 << 31;

/// Ticks (jiffies) a slot's `used` may lag before a packet of its flow
/// writes it again: a write per flow every 0.06-0.6 s (HZ 1000-100) keeps
/// active flows from being evicted without a store on every packet.
pub const FLOW_USED_TICKS: u32 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_has_two_buckets_inside_any_table() {
        for buckets in [1, 2, 3, 1000, flow_buckets(DEFAULT_MAX_FLOWS), u32::MAX] {
            for hash in [0, 1, u64::MAX, 0x8000_0000_0000_0000, 0xdead_beef_cafe_f00d] {
                let [a, b] = flow_buckets_of(hash, buckets);
                assert!(a < buckets && b < buckets, "{hash:x} in {buckets}");
            }
        }
        // Two slots per flow, in whole buckets.
        assert_eq!(flow_buckets(1), 1);
        assert_eq!(flow_buckets(4096), 2048);
        assert_eq!(flow_buckets(4097), 2049);
    }

    #[test]
    fn the_slot_check_covers_the_row_and_the_mac() {
        let key = FlowKey {
            src: [10, 0, 0, 50],
            dst: [10, 0, 0, 100],
            src_port: 40000u16.to_be_bytes(),
            dst_port: 80u16.to_be_bytes(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let hash = flow_hash64(&key);
        let (row, mac) = (17, [2, 0xbe, 0, 0, 0, 1]);
        let check = flow_check(hash, row, mac);
        assert_ne!(check, flow_check(hash, 18, mac));
        assert_ne!(check, flow_check(hash, row, [2, 0xbe, 0, 0, 0, 2]));
        assert_ne!(check, flow_check(hash ^ 1, row, mac));
        assert_eq!(flow_hash(&key), hash as u32);
        assert_ne!(key.words(), [0; 2], "a flow's key is never an empty slot's");
    }

    #[test]
    fn ipv6_flows_hash_on_every_field() {
        let mut addrs = [0u8; 32];
        addrs[..16].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50]);
        addrs[16..].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        let (src_port, dst_port) = (40000u16.to_be_bytes(), 80u16.to_be_bytes());
        let hash_of = |addrs: &[u8; 32], src_port| {
            flow_hash64_words6(&flow_words6(addrs, src_port, dst_port, IPPROTO_TCP))
        };
        let hash = hash_of(&addrs, src_port);
        let mut other = addrs;
        other[3] ^= 1;
        assert_ne!(hash_of(&other, src_port), hash, "the source");
        other = addrs;
        other[31] ^= 1;
        assert_ne!(hash_of(&other, src_port), hash, "the destination");
        assert_ne!(
            hash_of(&addrs, [src_port[0], src_port[1] ^ 1]),
            hash,
            "a port"
        );
        assert_ne!(
            flow_words6(&addrs, src_port, dst_port, IPPROTO_TCP),
            [0; 5],
            "a flow's key is never an empty slot's"
        );
    }
}
