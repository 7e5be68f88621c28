//! Announcements (protocol §4.3, §5.2, §5.5): insert or refresh a backend in the
//! server list, or remove it at once when it is LEAVING.
use aya_ebpf::{btf_maps::lpm_trie::Key, programs::XdpContext};
use lb_common::{
    BackendEntry, BackendKey, BackendKey6, Counter, DepartureReason, is_global_unicast6,
    wire::{
        ANNOUNCE_MAGIC, ANNOUNCE_OFF_FLAGS, ANNOUNCE_OFF_SEQUENCE, ANNOUNCE_OFF_VERSION,
        ANNOUNCE_OFF_WEIGHT, ANNOUNCE_V1_LEN, ANNOUNCE_VERSION, DEFAULT_WEIGHT, FLAG_LEAVING,
    },
};
use network_types::udp::UdpHdr;

use crate::{
    auth, clock, epochs,
    maps::{
        ALLOWLIST_ON, ANNOUNCE_ALLOW, ANNOUNCE_ALLOW6, ANNOUNCE_PORTS, ANNOUNCE_PORTS6, AUTH_ON,
        AnnouncePorts, lb_addr, lb_addr6,
    },
    parse::{Ipv4Packet, Ipv6Packet, ptr_at},
    routed,
    server_list::ServerKey,
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
    let Some((port, udp_len)) = udp_header(ctx, packet.l4_offset) else {
        return Counter::Malformed;
    };
    let Some(group_id) = port_group(&ANNOUNCE_PORTS, port) else {
        return Counter::Ignored;
    };
    if packet.dst != lb_addr() {
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
    let key = BackendKey {
        group_id,
        addr: packet.src,
    };
    register(ctx, packet.l4_offset, udp_len, packet.eth_src, &key)
}

/// An IPv6 announcement (protocol §9): UDP to the LB's IPv6 address from
/// a backend's global address. Fragments never get here (their next
/// header is the fragment header). With `--allow`, only sources in its
/// IPv6 prefixes (none, if it holds IPv4 ones only).
#[inline(always)]
pub fn handle6(ctx: &XdpContext, packet: &Ipv6Packet) -> Counter {
    let Some((port, udp_len)) = udp_header(ctx, packet.l4_offset) else {
        return Counter::Malformed;
    };
    let Some(group_id) = port_group(&ANNOUNCE_PORTS6, port) else {
        return Counter::Ignored;
    };
    if packet.dst != lb_addr6() {
        // A routed report travels to the group itself.
        return routed::handle6(ctx, packet, udp_len, group_id);
    }
    if udp_len < UdpHdr::LEN || udp_len > packet.l4_len {
        return Counter::AnnounceMalformed;
    }
    if !is_global_unicast6(&packet.src) || packet.eth_src[0] & 1 != 0 {
        return Counter::AnnounceBadSource;
    }
    if ALLOWLIST_ON.load() != 0 && ANNOUNCE_ALLOW6.get(&Key::new(128, packet.src)).is_none() {
        return Counter::AnnounceNotAllowed;
    }
    let key = BackendKey6 {
        group_id,
        addr: packet.src,
    };
    register(ctx, packet.l4_offset, udp_len, packet.eth_src, &key)
}

/// The destination port and UDP length of the UDP header at `l4_offset`,
/// if the packet holds it.
#[inline(always)]
fn udp_header(ctx: &XdpContext, l4_offset: usize) -> Option<(u16, usize)> {
    let udp = ptr_at::<UdpHdr>(ctx, l4_offset)?;
    // SAFETY: ptr_at checked the bounds.
    let udp = unsafe { &*udp };
    Some((
        u16::from_be_bytes(udp.dst),
        usize::from(u16::from_be_bytes(udp.len)),
    ))
}

/// The group whose announcement port `port` is in `ports` (one array per
/// family).
#[inline(always)]
fn port_group(ports: &AnnouncePorts, port: u16) -> Option<u32> {
    // Every port has a slot: 0 is no group's port.
    ports
        .get(u32::from(port))
        .and_then(|&slot| slot.checked_sub(1))
}

/// The part both families share, once the source is admitted: the payload,
/// its tag, the server list.
#[inline(always)]
fn register<K: ServerKey>(
    ctx: &XdpContext,
    l4_offset: usize,
    udp_len: usize,
    eth_src: [u8; 6],
    key: &K,
) -> Counter {
    let v1 = read_v1(ctx, l4_offset + UdpHdr::LEN, udp_len - UdpHdr::LEN);
    if AUTH_ON.load() != 0 {
        let Some(bytes) = v1 else {
            return Counter::AuthMissing;
        };
        if let Err(reject) = auth::verify(key, bytes) {
            return reject;
        }
    }
    let (outcome, changed) = apply(ctx, eth_src, key, Payload::from_v1(v1));
    if outcome != Counter::AnnounceTableFull {
        let group_id = key.group_id();
        stats::group_add(group_id, GroupEvent::Announcement, 1);
        stats::group_add(group_id, GroupEvent::Change, u64::from(changed));
    }
    outcome
}

/// Applies an accepted announcement to the server list; returns its
/// counter and whether the list changed (a backend inserted or removed,
/// its weight or flags changed), which lb-user watches for.
#[inline(always)]
fn apply<K: ServerKey>(
    ctx: &XdpContext,
    eth_src: [u8; 6],
    key: &K,
    payload: Payload,
) -> (Counter, bool) {
    if payload.flags & FLAG_LEAVING != 0 {
        if !key.remove() {
            // Not registered: nothing to remove, but the message was valid.
            return (Counter::AnnounceAccepted, false);
        }
        epochs::bump();
        key.log_removed(ctx, DepartureReason::Leaving);
        return (Counter::AnnounceLeaving, true);
    }
    // The coarse clock (a tick or two behind) costs a fraction of the
    // fine one, and heartbeats are periods apart; leaves are judged by
    // the announcement count, not by this time.
    let now = clock::coarse_ns();
    // A known backend is refreshed in place: no map update on the
    // heartbeat path. lb-user only reads the entry, and each field is
    // written whole, so a reader sees the old or the new value of each.
    if let Some(entry) = key.entry() {
        // SAFETY: a valid pointer into the map's value for this key. Other
        // CPUs (this backend's next heartbeat) and lb-user (aging) touch it
        // too, so it is read and written field by field through the raw
        // pointer, never as a reference: a racing heartbeat writes the same
        // values, and a reader sees each field whole, old or new.
        let (changed, moved) = unsafe {
            let changed = (&raw const (*entry).weight).read() != payload.weight
                || (&raw const (*entry).flags).read() != payload.flags;
            let moved = (&raw const (*entry).mac).read() != eth_src;
            let announcements = &raw mut (*entry).announcements;
            (&raw mut (*entry).last_seen_ns).write(now);
            (&raw mut (*entry).sequence).write(payload.sequence);
            announcements.write(announcements.read() + 1);
            (&raw mut (*entry).mac).write(eth_src);
            (&raw mut (*entry).weight).write(payload.weight);
            (&raw mut (*entry).flags).write(payload.flags);
            (&raw mut (*entry).version).write(payload.version);
            (changed, moved)
        };
        if moved {
            key.remember_mac(eth_src);
        }
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
        mac: eth_src,
        weight: payload.weight,
        flags: payload.flags,
        version: payload.version,
        _pad: [0; 6],
    };
    // BPF_NOEXIST: a CPU that registered the same backend a moment ago
    // keeps its entry; this announcement then only counts as a refresh.
    match key.insert(&entry) {
        Ok(()) => {
            key.remember_mac(entry.mac);
            key.log_registered(ctx, entry.mac, entry.weight);
            (Counter::AnnounceRegistered, true)
        }
        Err(EEXIST) => (Counter::AnnounceAccepted, false),
        Err(_) => {
            key.log_table_full(ctx);
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
