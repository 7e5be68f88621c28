//! Client traffic to a service's VIP, direct server return (protocol §7): on
//! the LB's segment the frame goes back out with the backend's MAC as
//! destination; across routers it is wrapped in IPIP (`ipip`). Either way
//! the backend (which holds the VIP on its loopback) answers the client
//! directly.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    BackendKey, Counter, Flow, FlowKey, ForwardingMode, Service, ServiceBackend, ServiceKey,
    addr::{mapped, unmapped},
    flow_hash64,
    wire::FLAG_DOWN,
};
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr};

use crate::{
    epochs,
    flows::{Found, Place},
    ipip,
    maps::{
        BACKENDS, FORWARDING, LB_ADDR, LB_MAC, MAGLEV, PREVIOUS_SERVICES, SEGMENT_MASK,
        SERVICE_BACKENDS, SERVICES, VIPS,
    },
    parse::{IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, ptr_at},
    stats,
};

/// A packet the VIP filter let through: forwarded, or dropped as a VIP's,
/// with its counter; `None` if it is no service's packet (no VIP, or a
/// port or protocol of a VIP without a service), to be classified like any.
#[inline(always)]
pub fn handle(ctx: &XdpContext, eth: *mut EthHdr, packet: &Ipv4Packet) -> Option<Counter> {
    if packet.proto != IPPROTO_TCP && packet.proto != IPPROTO_UDP {
        // ICMP and the rest: the LB's own stack answers, for a VIP too.
        return None;
    }
    // Only whole, option-free datagrams can be hashed on their ports.
    if packet.is_fragment || packet.has_options {
        return is_vip(packet.dst).then_some(Counter::VipMalformed);
    }
    let Some((ports, new_connection)) = transport(ctx, packet) else {
        return is_vip(packet.dst).then_some(Counter::VipMalformed);
    };
    let [src_port, dst_port] = ports;
    let flow_key = FlowKey {
        src: packet.src,
        dst: packet.dst,
        src_port,
        dst_port,
        proto: packet.proto,
        _pad: [0; 3],
    };
    let hash = flow_hash64(&flow_key);
    // Never: the index is inside the table.
    let place = Place::of(flow_key.words(), hash)?;
    // Read before any check of the server list, so that a change during
    // it leaves what the check finds under an old count.
    let epoch = epochs::current();
    let known = if new_connection {
        Found::NONE
    } else {
        place.find()
    };
    // A flow exists only for a service's packet, and nothing that could
    // end its claim (or its row's) happened since its check: no service
    // lookup.
    if known.is_some()
        && known.flow.epoch == epoch
        && let Some(addr) = named_by(known.flow.row).and_then(|target| unmapped(&target.addr))
    {
        let flow = known.flow;
        stats::traffic_add(flow.row, packet_bytes(ctx), false);
        let hit = Picked {
            row: flow.row,
            addr,
            mac: flow.mac,
            new_flow: false,
            previous: NO_BACKEND,
        };
        return Some(send(ctx, eth, packet, &hit));
    }
    let picked = match pick_for_service(&place, known, epoch, (new_connection, packet, dst_port)) {
        Ok(picked) => picked,
        Err(outcome) => return outcome,
    };
    stats::traffic_add(picked.row, packet_bytes(ctx), picked.new_flow);
    Some(send(ctx, eth, packet, &picked))
}

/// The backend for a flow that needs its service: `Err` with what to do
/// when there is none (`None`: no service of a VIP, classified like any
/// packet; else the counted drop).
#[inline(always)]
fn pick_for_service(
    place: &Place,
    known: Found,
    epoch: u32,
    (new_connection, packet, dst_port): (bool, &Ipv4Packet, [u8; 2]),
) -> Result<Picked, Option<Counter>> {
    let service_key = ServiceKey {
        vip: mapped(packet.dst),
        port: u16::from_be_bytes(dst_port),
        proto: packet.proto,
        _pad: 0,
    };
    // SAFETY: plain value written only by lb-user; copied out at once.
    let Some(service) = (unsafe { SERVICES.get(&service_key) }).copied() else {
        // Another port of a VIP, or no VIP: classified like any packet (to
        // a VIP's other ports that ends in `ignored`, and the stack).
        return Err(None);
    };
    // A TCP packet past its SYN of a flow this LB does not know may belong
    // to a connection another LB (or this one before a restart) sent
    // where the previous table says.
    let previous = if !new_connection && packet.proto == IPPROTO_TCP && !known.is_some() {
        previous_pick(&service_key, place.maglev_hash())
    } else {
        NO_BACKEND
    };
    pick_backend(&service, place, known, epoch, (new_connection, previous))
        .ok_or(Some(Counter::VipNoBackend))
}

/// Sends the packet on to its backend: wrapped twice for a second chance
/// (naming the previous backend), wrapped in IPIP beyond the LB's
/// segment, else with the backend's MAC as destination (layer-2 DSR).
#[inline(always)]
fn send(ctx: &XdpContext, eth: *mut EthHdr, packet: &Ipv4Packet, to: &Picked) -> Counter {
    let second_chance = to.previous != NO_BACKEND;
    let mode = ForwardingMode::from_raw(FORWARDING.load());
    let wraps = mode.wraps(to.addr, LB_ADDR.load(), SEGMENT_MASK.load());
    if second_chance || wraps {
        let (next, sent) = match (second_chance, to.new_flow) {
            (true, _) => (Some(to.previous), Counter::VipSecondChance),
            (false, true) => (None, Counter::IpipNewFlow),
            (false, false) => (None, Counter::IpipForwarded),
        };
        // A layer-2 backend is reached at the MAC it announces from.
        let on_segment = (!wraps).then_some(to.mac);
        return ipip::forward(ctx, packet, to.addr, (next, on_segment), sent);
    }
    // SAFETY: eth was bounds-checked by the caller; XDP packets are writable.
    unsafe {
        (*eth).dst_addr = to.mac;
        (*eth).src_addr = LB_MAC.load();
    }
    if to.new_flow {
        Counter::VipNewFlow
    } else {
        Counter::VipForwarded
    }
}

/// Bytes of the client's packet as it arrived: its IP header and payload.
#[inline(always)]
fn packet_bytes(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()).saturating_sub(EthHdr::LEN) as u64
}

/// Whether `addr` is a VIP: asked only on the rare paths (fragments,
/// options, a cut transport header) that the VIP filter alone cannot
/// settle, where a VIP's packet is dropped and anyone else's passed.
#[inline(always)]
fn is_vip(addr: [u8; 4]) -> bool {
    // SAFETY: a presence check of a plain value that only lb-user writes.
    unsafe { VIPS.get(&mapped(addr)) }.is_some()
}

/// The ports of a TCP or UDP packet and whether it opens a new connection
/// (a TCP SYN without ACK, whatever an old entry for the same 5-tuple, a
/// reused client port, says); `None` if the whole transport header is not
/// there (a TCP header shorter than 20 bytes, a UDP header shorter than 8).
#[inline(always)]
fn transport(ctx: &XdpContext, packet: &Ipv4Packet) -> Option<([[u8; 2]; 2], bool)> {
    if packet.proto == IPPROTO_TCP {
        if packet.l4_len < TcpHdr::LEN {
            return None;
        }
        let tcp = ptr_at::<TcpHdr>(ctx, packet.l4_offset)?;
        // SAFETY: ptr_at checked the bounds.
        let tcp = unsafe { &*tcp };
        Some(([tcp.source, tcp.dest], tcp.syn() != 0 && tcp.ack() == 0))
    } else {
        if packet.l4_len < UdpHdr::LEN {
            return None;
        }
        let udp = ptr_at::<UdpHdr>(ctx, packet.l4_offset)?;
        // SAFETY: ptr_at checked the bounds.
        let udp = unsafe { &*udp };
        Some(([udp.src, udp.dst], false))
    }
}

/// The address no backend has: no previous backend.
const NO_BACKEND: [u8; 4] = [0; 4];

/// Where a flow's packet goes: the backend's row, address and MAC,
/// whether the flow is new, and for a second chance the backend the
/// previous table gives (else `NO_BACKEND`).
struct Picked {
    row: u32,
    addr: [u8; 4],
    mac: [u8; 6],
    new_flow: bool,
    previous: [u8; 4],
}

/// What row `row` names, copied out; `None` past the array (never: rows
/// come from lb-user's tables and from slots whose check passed).
#[inline(always)]
fn named_by(row: u32) -> Option<ServiceBackend> {
    // SAFETY: a plain value only lb-user writes, copied out at once.
    SERVICE_BACKENDS
        .get_ptr(row)
        .map(|target| unsafe { target.read() })
}

/// The backend of a known flow's `row` with its MAC, if the row names a
/// backend of `service` that is registered in its group and not DOWN.
#[inline(always)]
fn row_backend(service: &Service, row: u32) -> Option<([u8; 4], [u8; 6])> {
    let target = named_by(row)?;
    // A row freed and given to another service's backend since the flow
    // was checked names that backend: not this flow's.
    if target.service_id != service.service_id {
        return None;
    }
    let addr = unmapped(&target.addr)?;
    Some((addr, backend_mac(service, addr)?))
}

/// The backend for a flow. A known flow (its slot and entry `known`, whose
/// `epoch` is older than `epoch`, the count read before this check) keeps
/// its backend while that backend is registered (even DRAINING); a new
/// connection or an unknown flow gets one from the Maglev table; a pick
/// that the previous table's `previous` (for an unknown flow's TCP packet
/// past its SYN; else `NO_BACKEND`) disagrees with names it and is not
/// recorded: each packet of the flow asks again.
#[inline(always)]
fn pick_backend(
    service: &Service,
    place: &Place,
    known: Found,
    epoch: u32,
    (new_connection, previous): (bool, [u8; 4]),
) -> Option<Picked> {
    if known.is_some() {
        let flow = known.flow;
        if let Some((addr, mac)) = row_backend(service, flow.row) {
            if flow.mac == mac {
                place.checked(known.slot, epoch);
            } else {
                // A new MAC (rare) replaces the entry whole.
                place.record(Flow::new(flow.row, mac, epoch), true);
            }
            return Some(Picked {
                row: flow.row,
                addr,
                mac,
                new_flow: false,
                previous: NO_BACKEND,
            });
        }
    }
    let size = service.active_size();
    // Checked for the verifier too: a zero size must not divide.
    if size == 0 {
        return None;
    }
    // An index past the pool (never written so) finds no entry.
    let index = service.maglev_index(service.active_slot, place.maglev_hash() % size);
    let row = *MAGLEV.get(index)?;
    // No service check: the table names only its service's rows (lb-user
    // frees a row only once the active table does not name it). Row 0 (an
    // empty entry) names no backend: `backend_mac` refuses it.
    let addr = unmapped(&named_by(row)?.addr)?;
    let mac = backend_mac(service, addr)?;
    if previous != NO_BACKEND && previous != addr {
        return Some(Picked {
            row,
            addr,
            mac,
            new_flow: false,
            previous,
        });
    }
    // A flow seen first past its SYN (its entry was lost) is established.
    place.record(Flow::new(row, mac, epoch), !new_connection);
    Some(Picked {
        row,
        addr,
        mac,
        new_flow: true,
        previous: NO_BACKEND,
    })
}

/// The backend service `key`'s previous table gives a flow of Maglev hash
/// `hash`, if that table exists and its backend is registered and not
/// DOWN (DRAINING is fine: its open connections are what this is for);
/// else `NO_BACKEND` (not an `Option`: a `None` leaves the payload's register
/// undefined, which the verifier refuses across a call).
///
/// Not inlined: its own stack frame keeps the program's within the
/// verifier's 512 bytes.
#[inline(never)]
fn previous_pick(key: &ServiceKey, hash: u32) -> [u8; 4] {
    // SAFETY: plain value written only by lb-user, which replaces it whole
    // (a hash map element: the old one stays valid while read).
    let Some(previous) = (unsafe { PREVIOUS_SERVICES.get(key) }) else {
        return NO_BACKEND;
    };
    let size = previous.active_size();
    // Checked for the verifier too: a zero size must not divide.
    if size == 0 {
        return NO_BACKEND;
    }
    let Some(&row) = MAGLEV.get(previous.maglev_index(previous.active_slot, hash % size)) else {
        return NO_BACKEND;
    };
    // Checked: a previous table that could not be rebuilt may name rows
    // freed since.
    row_backend(previous, row).map_or(NO_BACKEND, |(addr, _)| addr)
}

/// MAC of `addr` if it is registered in the service's group and not DOWN
/// (a DOWN backend's service fails its check: its flows move, and until
/// the next table rebuild a new flow that lands on it finds no backend).
#[inline(always)]
fn backend_mac(service: &Service, addr: [u8; 4]) -> Option<[u8; 6]> {
    if addr == [0; 4] {
        return None;
    }
    let key = BackendKey {
        group_id: service.group_id,
        addr,
    };
    // SAFETY: copied out at once.
    let entry = unsafe { BACKENDS.get(&key) }?;
    (entry.flags & FLAG_DOWN == 0).then_some(entry.mac)
}
