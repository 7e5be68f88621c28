//! Loading the program: the object built from the current sources, its
//! globals and map sizes set, its maps pinned (or a killed instance's pins
//! reused), both programs verified.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{SchedClassifier, Xdp},
};
use lb_common::{
    FAMILY_PROGRAM_NAMES, FAMILY_PROGRAMS, ForwardingMode, GSO_PROGRAM_NAME, PROGRAM_NAME,
    backend_rows, flow_buckets, global_name, map_name,
};

use crate::maps::{ALL_MAPS, MapsError, map_err};

/// The XDP object, built by build.rs from the current sources.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// Where and how big: what the object is loaded with.
#[derive(Clone, Copy, Debug)]
pub struct LoadParams {
    /// The LB's own address: announcements go to it.
    pub lb_addr: Ipv4Addr,
    /// The LB's own IPv6 address: IPv6 announcements go to it
    /// (protocol §9); unspecified, none is accepted.
    pub lb_addr6: Ipv6Addr,
    /// The LB interface's MAC: the source of forwarded frames.
    pub lb_mac: [u8; 6],
    /// Capacity of the server list.
    pub max_backends: u32,
    /// Capacity of the connection table.
    pub max_flows: u32,
    /// Capacity of the IPv6 clients' connection table (1 without an IPv6 VIP).
    pub max_flows6: u32,
    /// Only sources in the allowlist (`LbMaps::allow`) may announce.
    pub allowlist_on: bool,
    /// Announcements must carry a tag under a key of `LbMaps::set_keys`.
    pub auth_on: bool,
    /// How client traffic reaches a backend.
    pub forwarding: ForwardingMode,
    /// Prefix length of the LB's segment: in `auto` mode, backends outside
    /// it are reached by IPIP.
    pub segment_prefix_len: u8,
    /// Prefix length of the LB's IPv6 address: IPv6 backends inside it
    /// are on its link (their MLD leaves are tied to them by MAC).
    pub segment6_prefix_len: u8,
    /// The GSO program will run on the interface's ingress: XDP hands it
    /// the super-packets it cannot wrap.
    pub gso_handoff: bool,
}

/// Loads the object and verifies the program. With `pin_dir`, every map
/// is pinned there, or, if a map of that name is pinned there already (a
/// killed instance's), that map is reused; a pinned map whose layout differs
/// from this build's is an error, never misread.
pub fn load_program(params: LoadParams, pin_dir: Option<&Path>) -> Result<Ebpf, MapsError> {
    let octets = params.lb_addr.octets();
    // A family the LB has no address of (no group of it) takes nothing
    // of its server list's maps, which are preallocated (the IPv6 ones
    // 40 MiB at 65,536 backends, the IPv4 ones 30).
    let capacity = |addr_unspecified: bool| {
        if addr_unspecified {
            1
        } else {
            params.max_backends
        }
    };
    let max_backends4 = capacity(params.lb_addr.is_unspecified());
    let max_backends6 = capacity(params.lb_addr6.is_unspecified());
    let mut loader = EbpfLoader::new();
    if let Some(dir) = pin_dir {
        for &name in ALL_MAPS.iter().chain([&FAMILY_PROGRAMS]) {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader
        .override_global(global_name::LB_ADDR, &u32::from_ne_bytes(octets), true)
        .override_global(
            global_name::LB_ADDR6,
            &u128::from_ne_bytes(params.lb_addr6.octets()),
            true,
        )
        .override_global(global_name::LB_MAC, &mac_word(params.lb_mac), true)
        .override_global(
            global_name::ALLOWLIST_ON,
            &u8::from(params.allowlist_on),
            true,
        )
        .override_global(global_name::AUTH_ON, &u8::from(params.auth_on), true)
        .override_global(global_name::FORWARDING, &(params.forwarding as u8), true)
        .override_global(
            global_name::SEGMENT_MASK,
            &u32::from_ne_bytes(crate::reach::netmask(params.segment_prefix_len).to_be_bytes()),
            true,
        )
        .override_global(
            global_name::SEGMENT6_MASK,
            &u128::from_ne_bytes(
                u128::MAX
                    .checked_shl(128 - u32::from(params.segment6_prefix_len.min(128)))
                    .unwrap_or(0)
                    .to_be_bytes(),
            ),
            true,
        )
        .override_global(
            global_name::FLOW_BUCKETS,
            &flow_buckets(params.max_flows),
            true,
        )
        .override_global(
            global_name::FLOW_BUCKETS6,
            &flow_buckets(params.max_flows6),
            true,
        )
        .override_global(
            global_name::GSO_HANDOFF,
            &u8::from(params.gso_handoff),
            true,
        )
        .map_max_entries(map_name::LAST_SEQUENCE, max_backends4.saturating_mul(2))
        .map_max_entries(map_name::BACKENDS, max_backends4)
        .map_max_entries(map_name::BACKENDS6, max_backends6)
        .map_max_entries(map_name::LAST_SEQUENCE6, max_backends6.saturating_mul(2))
        .map_max_entries(map_name::MAC_BACKENDS6, max_backends6)
        .map_max_entries(map_name::BACKEND_AGING, max_backends4)
        .map_max_entries(map_name::BACKEND_AGING6, max_backends6)
        .map_max_entries(map_name::LEAVES, max_backends4)
        .map_max_entries(map_name::LEAVES6, max_backends6)
        .map_max_entries(map_name::NEXT_HOPS, max_backends4)
        .map_max_entries(map_name::NEXT_HOPS6, max_backends6)
        .map_max_entries(map_name::FLOWS, flow_buckets(params.max_flows))
        .map_max_entries(map_name::FLOWS6, flow_buckets(params.max_flows6))
        .map_max_entries(
            map_name::SERVICE_BACKENDS,
            backend_rows(params.max_backends),
        )
        .map_max_entries(map_name::TRAFFIC, backend_rows(params.max_backends))
        .load(EBPF_OBJECT)?;
    xdp_program(&mut ebpf)?.load()?;
    load_ipv6_half(&mut ebpf)?;
    gso_program(&mut ebpf)?.load()?;
    Ok(ebpf)
}

/// `mac` as the `LB_MAC` global holds it: its bytes first in a `u64`.
fn mac_word(mac: [u8; 6]) -> u64 {
    let mut word = [0; 8];
    word[..6].copy_from_slice(&mac);
    u64::from_ne_bytes(word)
}

/// Loads the programs the XDP program tail-calls (its IPv6 half, and the
/// IPv4 clients' path to IPv6 backends, protocol §9) and puts each in its
/// slot. The kernel empties a program array once no process and no pin
/// holds it: with `pin_dir` it is pinned beside the maps, so a killed
/// instance's XDP keeps them, and the next instance puts its own there.
fn load_ipv6_half(ebpf: &mut Ebpf) -> Result<(), MapsError> {
    let missing = |name| MapsError::Missing { name };
    let mut fds = Vec::new();
    for name in FAMILY_PROGRAM_NAMES {
        let program: &mut Xdp = ebpf.program_mut(name).ok_or(missing(name))?.try_into()?;
        program.load()?;
        let fd = program
            .fd()?
            .try_clone()
            .map_err(|source| MapsError::ProgramFd { name, source })?;
        fds.push(fd);
    }
    let map = ebpf
        .map_mut(FAMILY_PROGRAMS)
        .ok_or(missing(FAMILY_PROGRAMS))?;
    let mut slots = ProgramArray::try_from(map).map_err(map_err(FAMILY_PROGRAMS))?;
    for (slot, fd) in (0u32..).zip(&fds) {
        slots.set(slot, fd, 0).map_err(map_err(FAMILY_PROGRAMS))?;
    }
    Ok(())
}

/// The GSO program (tc) of a loaded object.
pub fn gso_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, MapsError> {
    let program = ebpf
        .program_mut(GSO_PROGRAM_NAME)
        .ok_or(MapsError::Missing {
            name: GSO_PROGRAM_NAME,
        })?;
    Ok(program.try_into()?)
}

/// The XDP program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, MapsError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(MapsError::Missing { name: PROGRAM_NAME })?;
    Ok(program.try_into()?)
}
