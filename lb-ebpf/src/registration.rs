//! Announcements (protocol §4.3, §5.2, §5.5): insert or refresh a backend in the
//! server list, or remove it at once when it is LEAVING.
use aya_ebpf::btf_maps::lpm_trie::Key;
use aya_ebpf::{bindings::BPF_NOEXIST, programs::XdpContext};
use lb_common::{
    BackendEntry, BackendKey, Counter, DepartureReason,
    wire::{
        ANNOUNCE_MAGIC, ANNOUNCE_OFF_FLAGS, ANNOUNCE_OFF_SEQUENCE, ANNOUNCE_OFF_VERSION,
        ANNOUNCE_OFF_WEIGHT, ANNOUNCE_V1_LEN, ANNOUNCE_VERSION, DEFAULT_WEIGHT, FLAG_LEAVING,
    },
};
use network_types::udp::UdpHdr;

use crate::{
    auth, clock, epochs, events,
    maps::{ALLOWLIST_ON, ANNOUNCE_ALLOW, ANNOUNCE_PORTS, AUTH_ON, BACKENDS, LB_ADDR},
    parse::{Ipv4Packet, ptr_at},
    routed,
    stats::{self, GroupEvent},
};

/// The error (a negated errno) of an insert that finds its key there.
const EEXIST: i32 = -17;

/// The fields a payload sets: flags, weight, sequence, version.
struct Payload {
    flags: u8,
    weight: u16,
    sequence: u64,
    version: u8,
}

impl Payload {
    const PLAIN: Payload = Payload {
        flags: 0,
        weight: DEFAULT_WEIGHT,
        sequence: 0,
        version: 0,
    };
}

#[inline(always)]
pub fn handle(ctx: &XdpContext, packet: &Ipv4Packet) -> Counter {
    let Some(udp) = ptr_at::<UdpHdr>(ctx, packet.l4_offset) else {
        return Counter::Malformed;
    };
    // SAFETY: ptr_at checked the bounds.
    let udp = unsafe { &*udp };
    let port = u16::from_be_bytes(udp.dst);
    // Every port has a slot: 0 is no group's port.
    let Some(group_id) = ANNOUNCE_PORTS
        .get(u32::from(port))
        .and_then(|&slot| slot.checked_sub(1))
    else {
        return Counter::Ignored;
    };
    let udp_len = usize::from(u16::from_be_bytes(udp.len));
    if packet.dst != LB_ADDR.load() {
        // A routed report travels to the group itself.
        return routed::handle(ctx, packet, udp_len, group_id);
    }
    // A fragment cannot be checked whole: it registers nothing.
    if packet.is_fragment {
        return Counter::AnnounceMalformed;
    }
    if udp_len < UdpHdr::LEN || udp_len > packet.l4_len {
        return Counter::AnnounceMalformed;
    }
    if !is_unicast_host(packet.src) || packet.eth_src[0] & 1 != 0 {
        return Counter::AnnounceBadSource;
    }
    if ALLOWLIST_ON.load() != 0 && ANNOUNCE_ALLOW.get(&Key::new(32, packet.src)).is_none() {
        return Counter::AnnounceNotAllowed;
    }
    let v1 = read_v1(ctx, packet.l4_offset + UdpHdr::LEN, udp_len - UdpHdr::LEN);
    let key = BackendKey {
        group_id,
        addr: packet.src,
    };
    if AUTH_ON.load() != 0 {
        let Some(bytes) = v1 else {
            return Counter::AuthMissing;
        };
        if let Err(reject) = auth::verify(&key, bytes) {
            return reject;
        }
    }
    let (outcome, changed) = apply(ctx, packet, &key, Payload::from_v1(v1));
    if outcome != Counter::AnnounceTableFull {
        stats::group_add(group_id, GroupEvent::Announcement, 1);
        stats::group_add(group_id, GroupEvent::Change, u64::from(changed));
    }
    outcome
}

/// Applies an accepted announcement to the server list; returns its
/// counter and whether the list changed (a backend inserted or removed,
/// its weight or flags changed), which lb-user watches for.
#[inline(always)]
fn apply(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    key: &BackendKey,
    payload: Payload,
) -> (Counter, bool) {
    if payload.flags & FLAG_LEAVING != 0 {
        return match BACKENDS.remove(key) {
            Ok(()) => {
                epochs::bump();
                events::removed(ctx, key, DepartureReason::Leaving);
                (Counter::AnnounceLeaving, true)
            }
            // Not registered: nothing to remove, but the message was valid.
            Err(_) => (Counter::AnnounceAccepted, false),
        };
    }
    // The coarse clock (a tick or two behind) costs a fraction of the
    // fine one, and heartbeats are periods apart; leaves are judged by
    // the announcement count, not by this time.
    let now = clock::coarse_ns();
    // A known backend is refreshed in place: no map update on the
    // heartbeat path. lb-user only reads the entry, and each field is
    // written whole, so a reader sees the old or the new value of each.
    if let Some(entry) = BACKENDS.get_ptr_mut(key) {
        // SAFETY: a valid pointer into the map's value for this key. Other
        // CPUs (this backend's next heartbeat) and lb-user (aging) touch it
        // too, so it is read and written field by field through the raw
        // pointer, never as a reference: a racing heartbeat writes the same
        // values, and a reader sees each field whole, old or new.
        let (changed, moved) = unsafe {
            let changed = (&raw const (*entry).weight).read() != payload.weight
                || (&raw const (*entry).flags).read() != payload.flags;
            let moved = (&raw const (*entry).mac).read() != packet.eth_src;
            let announcements = &raw mut (*entry).announcements;
            (&raw mut (*entry).last_seen_ns).write(now);
            (&raw mut (*entry).sequence).write(payload.sequence);
            announcements.write(announcements.read() + 1);
            (&raw mut (*entry).mac).write(packet.eth_src);
            (&raw mut (*entry).weight).write(payload.weight);
            (&raw mut (*entry).flags).write(payload.flags);
            (&raw mut (*entry).version).write(payload.version);
            (changed, moved)
        };
        if changed || moved {
            // After the write: flows check the new flags and MAC.
            epochs::bump();
        }
        return (Counter::AnnounceAccepted, changed);
    }
    let entry = BackendEntry {
        last_seen_ns: now,
        sequence: payload.sequence,
        announcements: 1,
        registered_ns: now,
        mac: packet.eth_src,
        weight: payload.weight,
        flags: payload.flags,
        version: payload.version,
        _pad: [0; 6],
    };
    // BPF_NOEXIST: a CPU that registered the same backend a moment ago
    // keeps its entry; this announcement then only counts as a refresh.
    match BACKENDS.insert(key, &entry, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            events::registered(ctx, key, entry.mac, entry.weight);
            (Counter::AnnounceRegistered, true)
        }
        Err(EEXIST) => (Counter::AnnounceAccepted, false),
        Err(_) => {
            events::table_full(ctx, key);
            (Counter::AnnounceTableFull, false)
        }
    }
}

/// The 24 bytes of a v1 payload (magic, version 1, whole), if it is one.
#[inline(always)]
fn read_v1(ctx: &XdpContext, offset: usize, len: usize) -> Option<&[u8; ANNOUNCE_V1_LEN]> {
    if len < ANNOUNCE_V1_LEN {
        return None;
    }
    let bytes = ptr_at::<[u8; ANNOUNCE_V1_LEN]>(ctx, offset)?;
    // SAFETY: ptr_at checked the bounds.
    let bytes = unsafe { &*bytes };
    (bytes[..4] == ANNOUNCE_MAGIC && bytes[ANNOUNCE_OFF_VERSION] == ANNOUNCE_VERSION)
        .then_some(bytes)
}

impl Payload {
    /// A v1 payload sets flags, weight and sequence; any other payload
    /// registers the source with defaults, as in the original method.
    #[inline(always)]
    fn from_v1(v1: Option<&[u8; ANNOUNCE_V1_LEN]>) -> Self {
        let Some(bytes) = v1 else {
            return Payload::PLAIN;
        };
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&bytes[ANNOUNCE_OFF_SEQUENCE..ANNOUNCE_OFF_SEQUENCE + 8]);
        Payload {
            flags: bytes[ANNOUNCE_OFF_FLAGS],
            weight: u16::from_be_bytes([
                bytes[ANNOUNCE_OFF_WEIGHT],
                bytes[ANNOUNCE_OFF_WEIGHT + 1],
            ]),
            sequence: u64::from_be_bytes(sequence),
            version: ANNOUNCE_VERSION,
        }
    }
}

/// Unicast host address: not 0/8, loopback, multicast, reserved or broadcast.
#[inline(always)]
fn is_unicast_host(addr: [u8; 4]) -> bool {
    !matches!(addr[0], 0 | 127 | 224..=255)
}
