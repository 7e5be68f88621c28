//! The connection table (`FLOWS`): an array of buckets of `FLOW_WAYS`
//! slots, written with plain stores. A flow lives in one of the two
//! buckets its hash names; a new flow takes its own old slot, else an
//! empty slot of the emptier bucket, else the least recently used of
//! both, a flow that never got past its SYN before one that did (so a SYN
//! flood evicts its own entries, not established connections). Slots
//! carry a check of their contents, so a slot torn by two CPUs writing it
//! at once reads as no entry.
//!
//! Every CPU reads and writes any slot at any time, so slots are touched
//! only through raw pointers, each access a copy in or out, never through a
//! reference: a race leaves a slot torn (its check then fails), old or new,
//! and the worst it does is send one flow by its Maglev pick.
use lb_common::{
    FLOW_ESTABLISHED, FLOW_USED_TICKS, FLOW_WAYS, Flow, FlowBucketOf, FlowSlotOf, flow_buckets_of,
    flow_check,
};

use crate::{
    clock,
    maps::{FLOW_BUCKETS, FLOW_BUCKETS6, FLOWS, FLOWS6},
};

/// What the table holds for a flow: its slot (null for none) and the
/// entry read from it. Not an `Option`: a `None` leaves the payload's
/// registers undefined, and the verifier rejects a program that spills
/// one.
#[derive(Clone, Copy)]
pub struct Found<const W: usize> {
    pub slot: *mut FlowSlotOf<W>,
    pub flow: Flow,
}

impl<const W: usize> Found<W> {
    pub const NONE: Found<W> = Found {
        slot: core::ptr::null_mut(),
        flow: Flow::new(0, [0; 6], 0),
    };

    #[inline(always)]
    pub fn is_some(&self) -> bool {
        !self.slot.is_null()
    }
}

/// A flow's place in its table (`FLOWS` for keys of 2 words, `FLOWS6`
/// for 5): its key's words, hash and buckets.
pub struct Place<const W: usize> {
    key: [u64; W],
    hash: u64,
    buckets: [*mut FlowBucketOf<W>; 2],
}

/// Low 31 bits of jiffies: a slot's `used` clock (the top bit is
/// `FLOW_ESTABLISHED`).
#[inline(always)]
fn now() -> u32 {
    clock::jiffies() as u32 & !FLOW_ESTABLISHED
}

/// Ticks since `used` (a slot's clock), on 31 bits.
#[inline(always)]
fn ticks_since(now: u32, used: u32) -> u32 {
    now.wrapping_sub(used) & !FLOW_ESTABLISHED
}

impl Place<2> {
    /// The buckets in `FLOWS` of the IPv4 flow with key words `key` and
    /// hash `hash`.
    #[inline(always)]
    pub fn of(key: [u64; 2], hash: u64) -> Option<Self> {
        let [first, second] = flow_buckets_of(hash, FLOW_BUCKETS.load());
        Some(Self {
            key,
            hash,
            buckets: [FLOWS.get_ptr_mut(first)?, FLOWS.get_ptr_mut(second)?],
        })
    }
}

impl Place<5> {
    /// The buckets in `FLOWS6` of the IPv6 flow with key words `key` and
    /// hash `hash`.
    #[inline(always)]
    pub fn of6(key: [u64; 5], hash: u64) -> Option<Self> {
        let [first, second] = flow_buckets_of(hash, FLOW_BUCKETS6.load());
        Some(Self {
            key,
            hash,
            buckets: [FLOWS6.get_ptr_mut(first)?, FLOWS6.get_ptr_mut(second)?],
        })
    }
}

impl<const W: usize> Place<W> {
    /// The hash the Maglev table is indexed with (`lb_common::flow_hash`).
    #[inline(always)]
    pub fn maglev_hash(&self) -> u32 {
        self.hash as u32
    }

    /// The flow's slot and the entry it held, if it held it whole: the
    /// entry is copied once and checked, never read again from a slot
    /// another CPU may be writing. Only packets other than SYNs look a flow
    /// up: the flow is marked established.
    #[inline(always)]
    pub fn find(&self) -> Found<W> {
        let Some(slot) = self.own_slot() else {
            return Found::NONE;
        };
        // SAFETY: a valid pointer into one of the buckets; copies only (see
        // the module's comment).
        let (flow, check, used) = unsafe {
            (
                (&raw const (*slot).flow).read(),
                (&raw const (*slot).check).read(),
                (&raw const (*slot).used).read(),
            )
        };
        if check != flow_check(self.hash, flow.row, flow.mac) {
            return Found::NONE;
        }
        let now = now();
        if used & FLOW_ESTABLISHED == 0 || ticks_since(now, used) > FLOW_USED_TICKS {
            // SAFETY: as above.
            unsafe { (&raw mut (*slot).used).write(now | FLOW_ESTABLISHED) };
        }
        Found { slot, flow }
    }

    /// Marks the flow's slot checked under `epoch`: only the count is
    /// written, and only while the slot still holds this flow (should
    /// another CPU give it to another flow at that moment, that flow keeps
    /// its own backend, MAC and check).
    #[inline(always)]
    pub fn checked(&self, slot: *mut FlowSlotOf<W>, epoch: u32) {
        if holds(slot, &self.key) {
            // SAFETY: a valid pointer into one of the buckets; one copy in
            // (see the module's comment).
            unsafe { (&raw mut (*slot).flow.epoch).write(epoch) };
        }
    }

    /// Records (or replaces) the flow, `established` unless a SYN opens
    /// it: in its own slot if it has one, else in an empty slot of the
    /// emptier bucket, else over the least recently used flow of both
    /// (one that never got past its SYN first).
    #[inline(always)]
    pub fn record(&self, flow: Flow, established: bool) {
        let now = now();
        let slot = match self.own_slot() {
            Some(own) => own,
            None => {
                let [first, second] = self.buckets;
                let (room_first, room_second) = (empties(first), empties(second));
                if room_second > room_first {
                    idlest(second, now).0
                } else if room_first > 0 {
                    idlest(first, now).0
                } else {
                    // Both full: the least recently used of both.
                    let (in_first, idle_first) = idlest(first, now);
                    let (in_second, idle_second) = idlest(second, now);
                    if idle_second > idle_first {
                        in_second
                    } else {
                        in_first
                    }
                }
            }
        };
        let whole = FlowSlotOf {
            key: self.key,
            flow,
            used: if established {
                now | FLOW_ESTABLISHED
            } else {
                now
            },
            check: flow_check(self.hash, flow.row, flow.mac),
        };
        // SAFETY: a valid pointer into one of the buckets; one copy in (see
        // the module's comment).
        unsafe { slot.write(whole) };
    }

    /// The slot holding this flow's key, whole or not. IPv6's 5-word keys
    /// are compared in a function of its own: unrolled over the eight
    /// slots inline, they took more than the program's 512 bytes of stack.
    #[inline(always)]
    fn own_slot(&self) -> Option<*mut FlowSlotOf<W>> {
        if W > 2 {
            let slot = self.own_slot_out_of_line();
            return (!slot.is_null()).then_some(slot);
        }
        self.own_slot_inline()
    }

    /// [`Self::own_slot`] as a call (null for none: an `Option` return
    /// would take two registers, which a BPF call cannot).
    #[inline(never)]
    fn own_slot_out_of_line(&self) -> *mut FlowSlotOf<W> {
        self.own_slot_inline().unwrap_or(core::ptr::null_mut())
    }

    #[inline(always)]
    fn own_slot_inline(&self) -> Option<*mut FlowSlotOf<W>> {
        for bucket in self.buckets {
            for way in 0..FLOW_WAYS {
                let slot = way_of(bucket, way);
                if holds(slot, &self.key) {
                    return Some(slot);
                }
            }
        }
        None
    }
}

/// Whether `slot` holds `key`, read word by word in place: an array's
/// `==` on a copied key became a call to a byte-by-byte `bcmp` for IPv6's
/// 40 bytes (it made the IPv6 connection-table hit twice the IPv4 one).
#[inline(always)]
fn holds<const W: usize>(slot: *mut FlowSlotOf<W>, key: &[u64; W]) -> bool {
    (0..W).fold(0, |diff, i| diff | (key_word(slot, i) ^ key[i])) == 0
}

/// Whether `slot` is empty (its key all zero), read as [`holds`] does.
#[inline(always)]
fn is_empty<const W: usize>(slot: *mut FlowSlotOf<W>) -> bool {
    (0..W).fold(0, |any, i| any | key_word(slot, i)) == 0
}

/// Word `i` of `slot`'s key, copied out.
#[inline(always)]
fn key_word<const W: usize>(slot: *mut FlowSlotOf<W>, i: usize) -> u64 {
    // The bound is for the verifier: callers stay below W.
    let i = i % W;
    // SAFETY: a valid slot pointer and an index inside its key; a copy
    // (see the module's comment).
    unsafe { (&raw const (*slot).key).cast::<u64>().add(i).read() }
}

/// Slot `way` of `bucket`.
#[inline(always)]
fn way_of<const W: usize>(bucket: *mut FlowBucketOf<W>, way: usize) -> *mut FlowSlotOf<W> {
    // The mask is for the verifier: the index stays inside the bucket.
    // SAFETY: a valid bucket pointer, and an index inside its array.
    unsafe {
        (&raw mut (*bucket).ways)
            .cast::<FlowSlotOf<W>>()
            .add(way & (FLOW_WAYS - 1))
    }
}

/// The last use of `slot`, copied out.
#[inline(always)]
fn used<const W: usize>(slot: *mut FlowSlotOf<W>) -> u32 {
    // SAFETY: a valid slot pointer; a copy (see the module's comment).
    unsafe { (&raw const (*slot).used).read() }
}

/// Empty slots in `bucket` (branch-free: few paths for the verifier).
#[inline(always)]
fn empties<const W: usize>(bucket: *mut FlowBucketOf<W>) -> u32 {
    (0..FLOW_WAYS)
        .map(|way| u32::from(is_empty(way_of(bucket, way))))
        .sum()
}

/// The slot of `bucket` to take (an empty one first, then the one idle
/// longest of those that never got past their SYN, then the one idle
/// longest), and how eagerly: its idle ticks, with the top bit set for an
/// empty slot or one that never got past its SYN.
#[inline(always)]
fn idlest<const W: usize>(bucket: *mut FlowBucketOf<W>, now: u32) -> (*mut FlowSlotOf<W>, u32) {
    let mut most = 0;
    let mut idle_most = 0;
    for way in 0..FLOW_WAYS {
        let slot = way_of(bucket, way);
        let used = used(slot);
        let idle = if is_empty(slot) {
            u32::MAX
        } else {
            ticks_since(now, used) | (!used & FLOW_ESTABLISHED)
        };
        if idle > idle_most {
            most = way;
            idle_most = idle;
        }
    }
    (way_of(bucket, most), idle_most)
}
