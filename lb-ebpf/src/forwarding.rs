//! Client traffic to a service's VIP: layer-2 direct server return. The
//! frame goes back out with the backend's MAC as destination; the backend
//! (which holds the VIP on its loopback) answers the client directly.
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::XdpContext};
use lb_common::{BackendKey, Counter, Flow, FlowKey, Service, ServiceKey, flow_hash};
use network_types::eth::EthHdr;

use crate::{
    Verdict,
    maps::{BACKENDS, FLOWS, LB_MAC, MAGLEV, SERVICES},
    parse::{IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, ptr_at},
};

const BPF_ANY: u64 = 0;

#[inline(always)]
pub fn handle(ctx: &XdpContext, eth: *mut EthHdr, packet: &Ipv4Packet) -> Result<Verdict, ()> {
    if packet.proto != IPPROTO_TCP && packet.proto != IPPROTO_UDP {
        // ICMP and the rest: the LB's own stack answers for the VIP.
        return Ok(Verdict::pass(Counter::Ignored));
    }
    // Only whole, option-free datagrams can be hashed on their ports.
    if packet.is_fragment || packet.has_options {
        return Ok(Verdict::drop(Counter::VipMalformed));
    }
    let Ok(ports) = ptr_at::<[[u8; 2]; 2]>(ctx, packet.l4_offset) else {
        return Ok(Verdict::drop(Counter::VipMalformed));
    };
    // SAFETY: ptr_at checked the bounds.
    let [src_port, dst_port] = unsafe { *ports };
    let service_key = ServiceKey {
        vip: packet.dst,
        port: u16::from_be_bytes(dst_port),
        proto: packet.proto,
        _pad: 0,
    };
    // SAFETY: plain value written only by lb-user; copied out at once.
    let Some(service) = (unsafe { SERVICES.get(&service_key) }).copied() else {
        return Ok(Verdict::pass(Counter::Ignored));
    };
    let flow_key = FlowKey {
        src: packet.src,
        dst: packet.dst,
        src_port,
        dst_port,
        proto: packet.proto,
        _pad: [0; 3],
    };
    let Some(mac) = pick_backend(&service, &flow_key, is_tcp_syn(ctx, packet)?) else {
        return Ok(Verdict::drop(Counter::VipNoBackend));
    };
    // SAFETY: eth was bounds-checked by the caller; XDP packets are writable.
    unsafe {
        (*eth).dst_addr = mac.0;
        (*eth).src_addr = LB_MAC.load();
    }
    Ok(Verdict::tx(if mac.1 {
        Counter::VipNewFlow
    } else {
        Counter::VipForwarded
    }))
}

/// A TCP SYN without ACK opens a new connection, whatever an old entry for
/// the same 5-tuple (a reused client port) says.
#[inline(always)]
fn is_tcp_syn(ctx: &XdpContext, packet: &Ipv4Packet) -> Result<bool, ()> {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    if packet.proto != IPPROTO_TCP {
        return Ok(false);
    }
    // Offset 13 of the TCP header holds the flags.
    let header: *const [u8; 14] = ptr_at(ctx, packet.l4_offset)?;
    // SAFETY: ptr_at checked the bounds.
    let flags = unsafe { (*header)[13] };
    Ok(flags & (SYN | ACK) == SYN)
}

/// The backend MAC for a flow, and whether the flow is new. A known flow
/// keeps its backend while that backend is registered (even DRAINING);
/// a new connection or an unknown flow gets one from the Maglev table.
#[inline(always)]
fn pick_backend(service: &Service, key: &FlowKey, new_connection: bool) -> Option<([u8; 6], bool)> {
    // SAFETY: plain values copied out at once.
    if !new_connection
        && let Some(flow) = unsafe { FLOWS.get(key) }.copied()
        && let Some(mac) = backend_mac(service, flow.backend)
    {
        return Some((mac, false));
    }
    let size = service.table_size;
    // Checked for the verifier too: a zero size must not divide.
    if size == 0 {
        return None;
    }
    let index = service.maglev_index(service.active_slot & 1, flow_hash(key) % size);
    let backend = *MAGLEV.get(index)?;
    let mac = backend_mac(service, backend)?;
    let flow = Flow {
        backend,
        service_id: service.service_id,
        // SAFETY: helper without preconditions.
        created_ns: unsafe { bpf_ktime_get_ns() },
    };
    // A full LRU evicts its oldest flow; a failed insert only costs stickiness.
    let _ = FLOWS.insert(key, &flow, BPF_ANY);
    Some((mac, true))
}

/// MAC of `addr` if it is registered in the service's group.
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
    unsafe { BACKENDS.get(&key) }.map(|e| e.mac)
}
