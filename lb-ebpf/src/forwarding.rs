//! Client traffic to a service's VIP, direct server return (protocol §7): on
//! the LB's segment the frame goes back out with the backend's MAC as
//! destination; across routers it is wrapped in IPIP (`ipip`). Either way
//! the backend (which holds the VIP on its loopback) answers the client
//! directly.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    BackendEntry, BackendKey, BackendKey6, Counter, Flow, FlowKey, ForwardingMode,
    IPV4_TO_IPV6_SLOT, Service, ServiceBackend, ServiceKey, ServiceKey4, WRAP_SLOT, WrapHandoff,
    addr::{mapped, unmapped},
    flow_hash64, flow_hash64_words6, flow_words6,
    wire::FLAG_DOWN,
};
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr};

use crate::{
    epochs,
    flows::{Found, Place},
    ipip::{self, Inner, Outer},
    maps::{
        BACKENDS, BACKENDS6, FAMILY_PROGRAMS, FORWARDING, MAGLEV, PREVIOUS_SERVICES,
        PREVIOUS_SERVICES6, SERVICE_BACKENDS, SERVICES, SERVICES6, VIPS, WRAP_HANDOFFS, lb_addr,
        lb_addr6, lb_mac, segment_mask, segment6_mask,
    },
    parse::{IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, Ipv6Packet, ptr_at},
    stats,
};

/// A backend's address as one instance of the forwarding path holds it:
/// `[u8; 4]` in `xdp_lb`, whose IPv4 path stays as small and fast as it
/// was (it hands the packets of services of IPv6 backends to
/// `xdp_lb4to6`), and `[u8; 16]` (IPv4-mapped or IPv6, as rows name them)
/// in `xdp_lb4to6` and `xdp_lb6`, which have stacks of their own.
pub trait BackendAddr: Outer + PartialEq {
    /// No backend.
    const NONE: Self;
    /// Whether this instance serves services of IPv6 backends.
    const IPV6: bool;
    /// The backend row `row` names, if this instance holds it (a row of
    /// no backend names none).
    fn of_row(row: *const ServiceBackend) -> Option<Self>;
    /// Its entry in its family's server list (in group `group_id`).
    fn entry(self, group_id: u32) -> Option<BackendEntry>;
    /// Whether traffic to it is wrapped in IP-in-IP.
    fn wraps(&self) -> bool;
    /// The IPv4 address, for an IPv4 backend.
    fn ipv4(&self) -> Option<[u8; 4]>;
}

impl BackendAddr for [u8; 4] {
    const NONE: Self = [0; 4];
    const IPV6: bool = false;
    #[inline(always)]
    fn of_row(row: *const ServiceBackend) -> Option<Self> {
        // SAFETY: a valid row pointer; a copy of the IPv4 field only.
        let addr = unsafe { (&raw const (*row).addr).read() };
        (addr != [0; 4]).then_some(addr)
    }
    #[inline(always)]
    fn entry(self, group_id: u32) -> Option<BackendEntry> {
        // SAFETY: copied out at once.
        unsafe {
            BACKENDS.get(&BackendKey {
                group_id,
                addr: self,
            })
        }
        .copied()
    }
    #[inline(always)]
    fn wraps(&self) -> bool {
        let mode = ForwardingMode::from_raw(FORWARDING.load());
        mode.wraps(*self, lb_addr(), segment_mask())
    }
    #[inline(always)]
    fn ipv4(&self) -> Option<[u8; 4]> {
        Some(*self)
    }
}

impl BackendAddr for [u8; 16] {
    const NONE: Self = [0; 16];
    const IPV6: bool = true;
    #[inline(always)]
    fn of_row(row: *const ServiceBackend) -> Option<Self> {
        // SAFETY: a valid row pointer; a copy.
        let addr = unsafe { row.read() }.addr16();
        (addr != [0; 16]).then_some(addr)
    }
    #[inline(always)]
    fn entry(self, group_id: u32) -> Option<BackendEntry> {
        match unmapped(&self) {
            Some(addr) => addr.entry(group_id),
            // SAFETY: copied out at once.
            None => unsafe {
                BACKENDS6.get(&BackendKey6 {
                    group_id,
                    addr: self,
                })
            }
            .copied(),
        }
    }
    #[inline(always)]
    fn wraps(&self) -> bool {
        match unmapped(self) {
            Some(addr) => addr.wraps(),
            None => ForwardingMode::from_raw(FORWARDING.load()).wraps6(
                *self,
                lb_addr6(),
                segment6_mask(),
            ),
        }
    }
    #[inline(always)]
    fn ipv4(&self) -> Option<[u8; 4]> {
        unmapped(self)
    }
}

/// A service's key of one VIP family, and its maps.
pub trait ServiceLookup {
    /// The service XDP forwards by, copied out.
    fn service(&self) -> Option<Service>;
    fn proto(&self) -> u8;
    /// The service's previous table (the second chance), in place: lb-user
    /// replaces a hash map element whole, and the old one stays valid
    /// while read.
    fn previous(&self) -> Option<&Service>;
}

impl ServiceLookup for ServiceKey4 {
    #[inline(always)]
    fn service(&self) -> Option<Service> {
        // SAFETY: plain value written only by lb-user; copied out at once.
        unsafe { SERVICES.get(self) }.copied()
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn previous(&self) -> Option<&Service> {
        // SAFETY: plain value written only by lb-user, which replaces it
        // whole (a hash map element: the old one stays valid while read).
        unsafe { PREVIOUS_SERVICES.get(self) }
    }
}

impl ServiceLookup for ServiceKey {
    #[inline(always)]
    fn service(&self) -> Option<Service> {
        // SAFETY: as above.
        unsafe { SERVICES6.get(self) }.copied()
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn previous(&self) -> Option<&Service> {
        // SAFETY: as above.
        unsafe { PREVIOUS_SERVICES6.get(self) }
    }
}

/// Why a VIP's packet got no backend here.
enum Miss {
    /// No service of a VIP: classified like any packet.
    NotService,
    /// Dropped, counted so.
    Drop(Counter),
    /// A service of IPv6 backends reached by `xdp_lb`: `xdp_lb4to6` takes it.
    OtherFamily,
}

/// Where an IPv6 header's source address starts (the destination follows).
const IPV6_ADDRS_OFFSET: usize = 8;

/// An IPv4 client's packet the VIP filter let through: forwarded, or
/// dropped as a VIP's, with its counter; `None` if it is no service's
/// packet (no VIP, or a port or protocol of a VIP without a service), to
/// be classified like any. `B` is the backends' address as the program
/// holds it.
#[inline(always)]
pub fn handle<B: BackendAddr>(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    packet: &Ipv4Packet,
) -> Option<Counter> {
    if packet.proto != IPPROTO_TCP && packet.proto != IPPROTO_UDP {
        // ICMP and the rest: the LB's own stack answers, for a VIP too.
        return None;
    }
    // Only whole, option-free datagrams can be hashed on their ports.
    if packet.is_fragment || packet.has_options {
        return is_vip(mapped(packet.dst)).then_some(Counter::VipMalformed);
    }
    let Some((ports, new_connection)) =
        transport(ctx, packet.proto, packet.l4_offset, packet.l4_len)
    else {
        return is_vip(mapped(packet.dst)).then_some(Counter::VipMalformed);
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
    // Never: the index is inside the table.
    let place = Place::of(flow_key.words(), flow_hash64(&flow_key))?;
    let service_key = ServiceKey4 {
        vip: packet.dst,
        port: u16::from_be_bytes(dst_port),
        proto: packet.proto,
        _pad: 0,
    };
    match pick::<2, B, _>(ctx, &place, &service_key, new_connection) {
        Ok(picked) => Some(send(ctx, eth, packet, &picked)),
        Err(miss) => handled_elsewhere(ctx, miss),
    }
}

/// What becomes of a packet without a backend here: `xdp_lb4to6` takes
/// the packets of services of IPv6 backends (a tail call returns only if
/// its slot is empty, never once loaded).
#[inline(always)]
fn handled_elsewhere(ctx: &XdpContext, miss: Miss) -> Option<Counter> {
    match miss {
        Miss::NotService => None,
        Miss::Drop(counter) => Some(counter),
        Miss::OtherFamily => {
            // SAFETY: the context and the map are the kernel's.
            unsafe { FAMILY_PROGRAMS.tail_call(ctx, IPV4_TO_IPV6_SLOT) };
            Some(Counter::VipNoBackend)
        }
    }
}

/// [`handle`] for an IPv6 client's packet (protocol §9): forwarded at
/// layer 2 to a backend of either family; a packet with extension headers
/// to a VIP is dropped and counted.
#[inline(always)]
pub fn handle6(ctx: &XdpContext, eth: *mut EthHdr, packet: &Ipv6Packet) -> Option<Counter> {
    // TCP or UDP right after the fixed header, the common case, first.
    if packet.hop_by_hop || (packet.proto != IPPROTO_TCP && packet.proto != IPPROTO_UDP) {
        if packet.has_extension_headers() {
            return is_vip(packet.dst).then_some(Counter::VipExtensionHeaders);
        }
        // ICMPv6 (Neighbour Solicitations for the VIP among it) and the
        // rest: the LB's own stack answers.
        return None;
    }
    let Some((ports, new_connection)) =
        transport(ctx, packet.proto, packet.l4_offset, packet.l4_len)
    else {
        return is_vip(packet.dst).then_some(Counter::VipMalformed);
    };
    let [src_port, dst_port] = ports;
    // The parse checked these bytes (the fixed header): only for the verifier.
    let addrs = ptr_at::<[u8; 32]>(ctx, EthHdr::LEN + IPV6_ADDRS_OFFSET)?;
    // SAFETY: ptr_at checked the bounds.
    let words = flow_words6(unsafe { &*addrs }, src_port, dst_port, packet.proto);
    // Never: the index is inside the table.
    let place = Place::of6(words, flow_hash64_words6(&words))?;
    let service_key = ServiceKey {
        vip: packet.dst,
        port: u16::from_be_bytes(dst_port),
        proto: packet.proto,
        _pad: 0,
    };
    let picked = match pick::<5, [u8; 16], _>(ctx, &place, &service_key, new_connection) {
        Ok(picked) => picked,
        Err(miss) => return handled_elsewhere(ctx, miss),
    };
    let wraps = picked.addr.wraps();
    if wraps || picked.previous != <[u8; 16]>::NONE {
        return Some(wrap_elsewhere(ctx, &picked, wraps));
    }
    Some(rewrite_macs(eth, &picked))
}

/// The backend of a client's flow (`place`, of a packet to service
/// `service_key`), counted in its row: the connection table's while
/// nothing changed since its check, else the service's pick.
#[inline(always)]
fn pick<const W: usize, B: BackendAddr, K: ServiceLookup>(
    ctx: &XdpContext,
    place: &Place<W>,
    service_key: &K,
    new_connection: bool,
) -> Result<Picked<B>, Miss> {
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
        && let Some(target) = SERVICE_BACKENDS.get_ptr(known.flow.row)
    {
        // A current row of another family's backend: a flow of a service
        // of IPv6 backends.
        let Some(addr) = B::of_row(target) else {
            return Err(Miss::OtherFamily);
        };
        let flow = known.flow;
        stats::traffic_add(flow.row, packet_bytes(ctx), false);
        return Ok(Picked {
            row: flow.row,
            addr,
            mac: flow.mac,
            new_flow: false,
            previous: B::NONE,
        });
    }
    let picked = pick_for_service(place, known, epoch, (new_connection, service_key))?;
    stats::traffic_add(picked.row, packet_bytes(ctx), picked.new_flow);
    Ok(picked)
}

/// The backend for a flow that needs its service.
#[inline(always)]
fn pick_for_service<const W: usize, B: BackendAddr, K: ServiceLookup>(
    place: &Place<W>,
    known: Found<W>,
    epoch: u32,
    (new_connection, service_key): (bool, &K),
) -> Result<Picked<B>, Miss> {
    let Some(service) = service_key.service() else {
        // Another port of a VIP, or no VIP: classified like any packet (to
        // a VIP's other ports that ends in `ignored`, and the stack).
        return Err(Miss::NotService);
    };
    if service.backends_ipv6 != 0 && !B::IPV6 {
        return Err(Miss::OtherFamily);
    }
    // A TCP packet past its SYN of a flow this LB does not know may belong
    // to a connection another LB (or this one before a restart) sent
    // where the previous table says.
    let previous = if !new_connection && service_key.proto() == IPPROTO_TCP && !known.is_some() {
        previous_pick::<B, K>(service_key, place.maglev_hash())
    } else {
        B::NONE
    };
    pick_backend(&service, place, known, epoch, (new_connection, previous))
        .ok_or(Miss::Drop(Counter::VipNoBackend))
}

/// Sends an IPv4 client's packet on to its backend: wrapped twice for a
/// second chance (naming the previous backend), wrapped in IP-in-IP beyond
/// the LB's segment, else with the backend's MAC as destination
/// (layer-2 DSR).
#[inline(always)]
fn send<B: BackendAddr>(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    packet: &Ipv4Packet,
    to: &Picked<B>,
) -> Counter {
    let second_chance = to.previous != B::NONE;
    let wraps = to.addr.wraps();
    if !second_chance && !wraps {
        return rewrite_macs(eth, to);
    }
    let (Some(backend), false) = (to.addr.ipv4(), B::IPV6) else {
        return wrap_elsewhere(ctx, to, wraps);
    };
    let (next, sent) = match (second_chance, to.new_flow) {
        (true, _) => (to.previous.ipv4(), Counter::VipSecondChance),
        (false, true) => (None, Counter::IpipNewFlow),
        (false, false) => (None, Counter::IpipForwarded),
    };
    // A layer-2 backend is reached at the MAC it announces from.
    let on_segment = (!wraps).then_some(to.mac);
    match Inner::of_ipv4(ctx, packet) {
        Some(inner) => ipip::forward(ctx, &inner, backend, (next, on_segment), sent),
        // The caller parsed this header: never.
        None => Counter::IpipNoRoom,
    }
}

/// Hands a packet to the wrap program, which sends it on to its backend
/// in IP-in-IP (across routers if `wraps`, else a second chance to the MAC
/// it announces from): the programs with 16-byte backend addresses have
/// no stack left for it. A tail call returns only if its slot is empty,
/// never once loaded.
#[inline(always)]
fn wrap_elsewhere<B: BackendAddr>(ctx: &XdpContext, to: &Picked<B>, wraps: bool) -> Counter {
    // The array has its one slot on every CPU: only for the verifier.
    let Some(slot) = WRAP_HANDOFFS.get_ptr_mut(0) else {
        return Counter::IpipNoRoom;
    };
    let handoff = WrapHandoff {
        backend: to.addr.addr16(),
        previous: to.previous.addr16(),
        mac: to.mac,
        new_flow: u8::from(to.new_flow),
        on_segment: u8::from(!wraps),
    };
    // SAFETY: this CPU's slot, read by the wrap program on this CPU
    // within this packet's run; one copy in through the raw pointer.
    unsafe { slot.write(handoff) };
    // SAFETY: the context and the map are the kernel's.
    unsafe { FAMILY_PROGRAMS.tail_call(ctx, WRAP_SLOT) };
    Counter::IpipNoRoom
}

/// The wrap program's work: sends the client's packet (`inner`) to the
/// backend the program before it left in this CPU's slot, in an outer
/// header of the backend's family (twice for a second chance).
#[inline(always)]
pub fn wrap_handed_over(ctx: &XdpContext, inner: &Inner) -> Counter {
    // The array has its one slot on every CPU: only for the verifier.
    let Some(slot) = WRAP_HANDOFFS.get_ptr(0) else {
        return Counter::IpipNoRoom;
    };
    // SAFETY: this CPU's slot, written by the program that tail-called
    // this one for this packet, and by no other CPU: read in place (a copy
    // would take the frame's room the calls below need).
    let handoff = unsafe { &*slot };
    match unmapped(&handoff.backend) {
        Some(_) => forward_to::<[u8; 4]>(ctx, inner, handoff),
        None => forward_to::<[u8; 16]>(ctx, inner, handoff),
    }
}

/// [`ipip::forward`] of a handoff toward a backend of family `A` (its
/// previous backend, if any, of the same family: one group), in a stack
/// frame of its own: the two families' paths and their calls do not fit
/// one.
#[inline(never)]
fn forward_to<A: Outer>(ctx: &XdpContext, inner: &Inner, handoff: &WrapHandoff) -> Counter {
    let (Some(backend), previous) = (A::of16(&handoff.backend), A::of16(&handoff.previous)) else {
        return Counter::IpipNoRoom;
    };
    let sent = match (previous.is_some(), handoff.new_flow != 0) {
        (true, _) => Counter::VipSecondChance,
        (false, true) => Counter::IpipNewFlow,
        (false, false) => Counter::IpipForwarded,
    };
    let on_segment = (handoff.on_segment != 0).then_some(handoff.mac);
    ipip::forward(ctx, inner, backend, (previous, on_segment), sent)
}

/// Layer-2 DSR, the same for either family: the frame goes back out with
/// the backend's MAC as destination.
#[inline(always)]
fn rewrite_macs<B>(eth: *mut EthHdr, to: &Picked<B>) -> Counter {
    // SAFETY: eth was bounds-checked by the caller; XDP packets are writable.
    unsafe {
        (*eth).dst_addr = to.mac;
        (*eth).src_addr = lb_mac();
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

/// Whether `addr` (16 bytes, IPv4-mapped) is a VIP: asked only on the
/// rare paths (fragments, options, extension headers, a cut transport
/// header) that the VIP filter alone cannot
/// settle, where a VIP's packet is dropped and anyone else's passed.
#[inline(always)]
fn is_vip(addr: [u8; 16]) -> bool {
    // SAFETY: a presence check of a plain value that only lb-user writes.
    unsafe { VIPS.get(&addr) }.is_some()
}

/// The ports of a TCP or UDP packet and whether it opens a new connection
/// (a TCP SYN without ACK, whatever an old entry for the same 5-tuple, a
/// reused client port, says); `None` if the whole transport header is not
/// there (a TCP header shorter than 20 bytes, a UDP header shorter than 8).
#[inline(always)]
fn transport(
    ctx: &XdpContext,
    proto: u8,
    l4_offset: usize,
    l4_len: usize,
) -> Option<([[u8; 2]; 2], bool)> {
    if proto == IPPROTO_TCP {
        if l4_len < TcpHdr::LEN {
            return None;
        }
        let tcp = ptr_at::<TcpHdr>(ctx, l4_offset)?;
        // SAFETY: ptr_at checked the bounds.
        let tcp = unsafe { &*tcp };
        Some(([tcp.source, tcp.dest], tcp.syn() != 0 && tcp.ack() == 0))
    } else {
        if l4_len < UdpHdr::LEN {
            return None;
        }
        let udp = ptr_at::<UdpHdr>(ctx, l4_offset)?;
        // SAFETY: ptr_at checked the bounds.
        let udp = unsafe { &*udp };
        Some(([udp.src, udp.dst], false))
    }
}

/// Where a flow's packet goes: the backend's row, address and MAC,
/// whether the flow is new, and for a second chance the backend the
/// previous table gives (else `BackendAddr::NONE`).
struct Picked<B> {
    row: u32,
    addr: B,
    mac: [u8; 6],
    new_flow: bool,
    previous: B,
}

/// The backend of a known flow's `row` with its MAC, if the row names a
/// backend of `service` that is registered in its group and not DOWN.
#[inline(always)]
fn row_backend<B: BackendAddr>(service: &Service, row: u32) -> Option<(B, [u8; 6])> {
    // None past the array: never, rows come from lb-user's tables and
    // from slots whose check passed.
    let target = SERVICE_BACKENDS.get_ptr(row)?;
    // SAFETY: a valid row pointer; a copy of one field (rows are written
    // only by lb-user).
    let service_id = unsafe { (&raw const (*target).service_id).read() };
    // A row freed and given to another service's backend since the flow
    // was checked names that backend: not this flow's.
    if service_id != service.service_id {
        return None;
    }
    let addr = B::of_row(target)?;
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
fn pick_backend<const W: usize, B: BackendAddr>(
    service: &Service,
    place: &Place<W>,
    known: Found<W>,
    epoch: u32,
    (new_connection, previous): (bool, B),
) -> Option<Picked<B>> {
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
                previous: B::NONE,
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
    let addr = B::of_row(SERVICE_BACKENDS.get_ptr(row)?)?;
    let mac = backend_mac(service, addr)?;
    if previous != B::NONE && previous != addr {
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
        previous: B::NONE,
    })
}

/// The backend service `key`'s previous table gives a flow of Maglev hash
/// `hash`, if that table exists and its backend is registered and not
/// DOWN (DRAINING is fine: its open connections are what this is for);
/// else `BackendAddr::NONE`.
#[inline(always)]
fn previous_pick<B: BackendAddr, K: ServiceLookup>(key: &K, hash: u32) -> B {
    let Some(previous) = key.previous() else {
        return B::NONE;
    };
    // Checked: a previous table that could not be rebuilt may name rows
    // freed since.
    row_backend(previous, previous_row(previous, hash)).map_or(B::NONE, |(addr, _)| addr)
}

/// The row the `previous` table gives a flow of Maglev hash `hash` (0, no
/// backend, if none), in a stack frame of its own.
#[inline(never)]
fn previous_row(previous: &Service, hash: u32) -> u32 {
    let size = previous.active_size();
    // Checked for the verifier too: a zero size must not divide.
    if size == 0 {
        return 0;
    }
    MAGLEV
        .get(previous.maglev_index(previous.active_slot, hash % size))
        .copied()
        .unwrap_or(0)
}

/// MAC of `addr` (as a row names it) if it is registered in the
/// service's group (in its family's server list) and not DOWN (a DOWN
/// backend's service fails its check: its flows move, and until the next
/// table rebuild a new flow that lands on it finds no backend).
#[inline(always)]
fn backend_mac<B: BackendAddr>(service: &Service, addr: B) -> Option<[u8; 6]> {
    if addr == B::NONE {
        return None;
    }
    let entry = addr.entry(service.group_id)?;
    (entry.flags & FLAG_DOWN == 0).then_some(entry.mac)
}
