//! The connection table (`FLOWS`): an array of buckets of `FLOW_WAYS`
//! slots, written with plain stores. A flow lives in one of the two
//! buckets its hash names; a new flow takes its own old slot, else an
//! empty slot of the emptier bucket, else the least recently used of
//! both. Slots carry a check of their contents, so a slot torn by two
//! CPUs writing it at once reads as no entry.
use lb_common::{
    FLOW_USED_TICKS, FLOW_WAYS, Flow, FlowBucket, FlowSlot, flow_buckets_of, flow_check,
};

use crate::{
    clock,
    maps::{FLOW_BUCKETS, FLOWS},
};

/// What the table holds for a flow: its slot (null for none) and the
/// entry read from it. Not an `Option`: a `None` leaves the payload's
/// registers undefined, and the verifier rejects a program that spills
/// one.
#[derive(Clone, Copy)]
pub struct Found {
    pub slot: *mut FlowSlot,
    pub flow: Flow,
}

impl Found {
    pub const NONE: Found = Found {
        slot: core::ptr::null_mut(),
        flow: Flow::new([0; 4], [0; 6], 0),
    };

    #[inline(always)]
    pub fn is_some(&self) -> bool {
        !self.slot.is_null()
    }
}

/// A flow's place in the table: its key's words, hash and buckets.
pub struct Place {
    key: [u64; 2],
    hash: u64,
    buckets: [*mut FlowBucket; 2],
}

/// Low 32 bits of jiffies: a slot's `used` clock.
#[inline(always)]
fn now() -> u32 {
    clock::jiffies() as u32
}

impl Place {
    /// The buckets of the flow with key words `key` and hash `hash`.
    #[inline(always)]
    pub fn of(key: [u64; 2], hash: u64) -> Option<Self> {
        let [first, second] = flow_buckets_of(hash, FLOW_BUCKETS.load());
        Some(Self {
            key,
            hash,
            buckets: [FLOWS.get_ptr_mut(first)?, FLOWS.get_ptr_mut(second)?],
        })
    }

    /// The hash the Maglev table is indexed with (`lb_common::flow_hash`).
    #[inline(always)]
    pub fn maglev_hash(&self) -> u32 {
        self.hash as u32
    }

    /// The flow's slot and the entry it held, if it held it whole: the
    /// entry is copied once and checked, never read again from a slot
    /// another CPU may be writing.
    #[inline(always)]
    pub fn find(&self) -> Found {
        let Some(slot) = self.own_slot() else {
            return Found::NONE;
        };
        // SAFETY: a valid pointer into one of the buckets.
        let slot = unsafe { &mut *slot };
        let flow = slot.flow;
        if slot.check != flow_check(self.hash, flow.backend, flow.mac) {
            return Found::NONE;
        }
        let now = now();
        if now.wrapping_sub(slot.used) > FLOW_USED_TICKS {
            slot.used = now;
        }
        Found { slot, flow }
    }

    /// Marks the flow's slot checked under `epoch`: only the count is
    /// written, and only while the slot still holds this flow (should
    /// another CPU give it to another flow at that moment, that flow keeps
    /// its own backend, MAC and check).
    #[inline(always)]
    pub fn checked(&self, slot: *mut FlowSlot, epoch: u32) {
        // SAFETY: a valid pointer into one of the buckets.
        let slot = unsafe { &mut *slot };
        if slot.key == self.key {
            slot.flow.epoch = epoch;
        }
    }

    /// Records (or replaces) the flow: in its own slot if it has one, else
    /// in an empty slot of the emptier bucket, else over the least
    /// recently used flow of both.
    #[inline(always)]
    pub fn record(&self, flow: Flow) {
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
        // SAFETY: a valid pointer into one of the buckets.
        let slot = unsafe { &mut *slot };
        *slot = FlowSlot {
            key: self.key,
            flow,
            used: now,
            check: flow_check(self.hash, flow.backend, flow.mac),
        };
    }

    /// The slot holding this flow's key, whole or not.
    #[inline(always)]
    fn own_slot(&self) -> Option<*mut FlowSlot> {
        for bucket in self.buckets {
            // SAFETY: a valid pointer into the array's value for its index.
            let bucket = unsafe { &mut *bucket };
            for slot in bucket.ways.iter_mut() {
                if slot.key == self.key {
                    return Some(slot);
                }
            }
        }
        None
    }
}

/// Empty slots in `bucket` (branch-free: few paths for the verifier).
#[inline(always)]
fn empties(bucket: *mut FlowBucket) -> u32 {
    // SAFETY: a valid pointer into the array's value for its index.
    let bucket = unsafe { &*bucket };
    bucket
        .ways
        .iter()
        .map(|slot| u32::from(slot.is_empty()))
        .sum()
}

/// The slot of `bucket` idle longest (an empty one first), and its idle
/// ticks.
#[inline(always)]
fn idlest(bucket: *mut FlowBucket, now: u32) -> (*mut FlowSlot, u32) {
    // SAFETY: a valid pointer into the array's value for its index.
    let bucket = unsafe { &mut *bucket };
    let mut most = 0;
    let mut idle_most = 0;
    for (way, slot) in bucket.ways.iter().enumerate() {
        let idle = if slot.is_empty() {
            u32::MAX
        } else {
            now.wrapping_sub(slot.used)
        };
        if idle > idle_most {
            most = way;
            idle_most = idle;
        }
    }
    // The mask is for the verifier: the index stays inside the bucket.
    (&mut bucket.ways[most & (FLOW_WAYS - 1)], idle_most)
}
