//! The server list of each address family behind one interface: the
//! announcement and tag paths (`registration`, `auth`) are written once
//! for both, and each family's key says which map, which replay memory and
//! which log records are its own (protocol §4.3, §9).
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::XdpContext};
use lb_common::{
    BackendEntry, BackendKey, BackendKey6, DepartureReason, MacKey, PendingLeave,
    siphash::{tagged_message, tagged_message6},
};

use crate::{
    auth, events,
    maps::{
        BACKENDS, BACKENDS6, LAST_SEQUENCE, LAST_SEQUENCE6, LB_ADDR6, LEAVES, LEAVES6,
        MAC_BACKENDS6, SEGMENT6_MASK, lb_addr, lb_addr6,
    },
};

/// A backend's key in its family's server list.
pub trait ServerKey: Sized {
    fn group_id(&self) -> u32;
    /// The backend's entry, if registered.
    fn entry(&self) -> Option<*mut BackendEntry>;
    /// Inserts a new entry unless one is there (`BPF_NOEXIST`): the errno.
    fn insert(&self, entry: &BackendEntry) -> Result<(), i32>;
    /// Removes the entry; whether there was one.
    fn remove(&self) -> bool;
    /// Whether `tag` is the tag of an announcement from this backend to
    /// the LB whose first 16 bytes are `head`, under an active key.
    fn tag_matches(&self, head: &[u8; 16], tag: u64) -> bool;
    /// The last accepted sequence, if remembered.
    fn last_sequence(&self) -> Option<u64>;
    /// Remembers `sequence`; whether it could.
    fn set_last_sequence(&self, sequence: u64) -> bool;
    /// Notes that the backend announces from `mac` (registered, or moved).
    fn remember_mac(&self, mac: [u8; 6]);
    /// Inserts a pending leave into the family's map; whether it could.
    fn insert_leave(&self, leave: &PendingLeave) -> bool;
    /// Holds a leave of this registered backend for lb-user to confirm
    /// (with a key set a leave cannot be authenticated, protocol §4.2):
    /// whether it is held (a full map leaves it to missed heartbeats).
    #[inline(always)]
    fn hold_leave(&self) -> bool {
        let Some(entry) = self.entry() else {
            return false;
        };
        let pending = PendingLeave {
            // SAFETY: helper without preconditions.
            leave_ns: unsafe { bpf_ktime_get_ns() },
            // SAFETY: a valid pointer into the map's value, read through
            // the raw pointer (heartbeats on other CPUs write it).
            announcements: unsafe { (&raw const (*entry).announcements).read() },
        };
        self.insert_leave(&pending)
    }
    fn log_registered(&self, ctx: &XdpContext, mac: [u8; 6], weight: u16);
    fn log_removed(&self, ctx: &XdpContext, why: DepartureReason);
    fn log_table_full(&self, ctx: &XdpContext);
}

impl ServerKey for BackendKey {
    #[inline(always)]
    fn group_id(&self) -> u32 {
        self.group_id
    }
    #[inline(always)]
    fn entry(&self) -> Option<*mut BackendEntry> {
        BACKENDS.get_ptr_mut(self)
    }
    #[inline(always)]
    fn insert(&self, entry: &BackendEntry) -> Result<(), i32> {
        BACKENDS.insert(self, entry, u64::from(BPF_NOEXIST))
    }
    #[inline(always)]
    fn remove(&self) -> bool {
        BACKENDS.remove(self).is_ok()
    }
    #[inline(always)]
    fn tag_matches(&self, head: &[u8; 16], tag: u64) -> bool {
        auth::tag_matches(&tagged_message(self.addr, lb_addr(), head), tag)
    }
    #[inline(always)]
    fn last_sequence(&self) -> Option<u64> {
        // SAFETY: copied out at once.
        unsafe { LAST_SEQUENCE.get(self) }.copied()
    }
    #[inline(always)]
    fn set_last_sequence(&self, sequence: u64) -> bool {
        LAST_SEQUENCE.insert(self, &sequence, 0).is_ok()
    }
    /// IGMP leaves come from the backend's own address: nothing to note.
    #[inline(always)]
    fn remember_mac(&self, _mac: [u8; 6]) {}
    #[inline(always)]
    fn insert_leave(&self, leave: &PendingLeave) -> bool {
        LEAVES.insert(self, leave, 0).is_ok()
    }
    #[inline(always)]
    fn log_registered(&self, ctx: &XdpContext, mac: [u8; 6], weight: u16) {
        events::registered(ctx, self, mac, weight);
    }
    #[inline(always)]
    fn log_removed(&self, ctx: &XdpContext, why: DepartureReason) {
        events::removed(ctx, self, why);
    }
    #[inline(always)]
    fn log_table_full(&self, ctx: &XdpContext) {
        events::table_full(ctx, self);
    }
}

impl ServerKey for BackendKey6 {
    #[inline(always)]
    fn group_id(&self) -> u32 {
        self.group_id
    }
    #[inline(always)]
    fn entry(&self) -> Option<*mut BackendEntry> {
        BACKENDS6.get_ptr_mut(self)
    }
    #[inline(always)]
    fn insert(&self, entry: &BackendEntry) -> Result<(), i32> {
        BACKENDS6.insert(self, entry, u64::from(BPF_NOEXIST))
    }
    #[inline(always)]
    fn remove(&self) -> bool {
        BACKENDS6.remove(self).is_ok()
    }
    #[inline(always)]
    fn tag_matches(&self, head: &[u8; 16], tag: u64) -> bool {
        auth::tag_matches(&tagged_message6(self.addr, lb_addr6(), head), tag)
    }
    #[inline(always)]
    fn last_sequence(&self) -> Option<u64> {
        // SAFETY: copied out at once.
        unsafe { LAST_SEQUENCE6.get(self) }.copied()
    }
    #[inline(always)]
    fn set_last_sequence(&self, sequence: u64) -> bool {
        LAST_SEQUENCE6.insert(self, &sequence, 0).is_ok()
    }
    /// MLD leaves come from the host's link-local address: they are tied
    /// to the backend by this MAC (an LRU: a stale entry is checked
    /// against the backend's MAC when a leave uses it), if the backend is
    /// on the LB's link (its MAC is its own, not a router's).
    #[inline(always)]
    fn remember_mac(&self, mac: [u8; 6]) {
        if !on_segment6(&self.addr) {
            return;
        }
        let key = MacKey {
            group_id: self.group_id,
            mac,
            _pad: [0; 2],
        };
        let _ = MAC_BACKENDS6.insert(&key, &self.addr, 0);
    }
    #[inline(always)]
    fn insert_leave(&self, leave: &PendingLeave) -> bool {
        LEAVES6.insert(self, leave, 0).is_ok()
    }
    #[inline(always)]
    fn log_registered(&self, ctx: &XdpContext, mac: [u8; 6], weight: u16) {
        events::registered6(ctx, self, mac, weight);
    }
    #[inline(always)]
    fn log_removed(&self, ctx: &XdpContext, why: DepartureReason) {
        events::removed6(ctx, self, why);
    }
    #[inline(always)]
    fn log_table_full(&self, ctx: &XdpContext) {
        events::table_full6(ctx, self);
    }
}

/// Whether `addr` is inside the LB's IPv6 prefix (`SEGMENT6_MASK`).
#[inline(always)]
fn on_segment6(addr: &[u8; 16]) -> bool {
    (u128::from_ne_bytes(*addr) ^ LB_ADDR6.load()) & SEGMENT6_MASK.load() == 0
}
