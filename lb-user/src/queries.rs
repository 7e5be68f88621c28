//! The LB's queries (protocol §4.1, §4.4, §9): an IGMP or MLD query
//! carrying the LB's address on the segment and, across IPv4 multicast
//! routers, a routed UDP query.
use std::{
    io,
    net::{IpAddr, Ipv6Addr},
};

use lb_common::{
    mld::{mld_v1_query, mld_v2_query},
    wire::{IGMP_QUERY, Routed, igmp_v2_message, igmp_v3_code, igmp_v3_query},
};
use lb_host::{
    igmp_socket::IgmpSocket, mld_socket::MldSocket, routed_socket::RoutedSocket, system,
};

use crate::{control::ControlParams, maps::GroupConfig};

/// The layout of the LB's query (protocol §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryVersion {
    /// The original 8 bytes (IPv6: the 24 of MLDv1): hosts that hear it
    /// fall back to IGMPv2 (MLDv1) and rarely send a leave.
    V2,
    /// 12 bytes (IPv6: the 28 of MLDv2): hosts stay in IGMPv3 (MLDv2)
    /// mode and report leaving the group at once, even when the agent is
    /// killed.
    V3,
}

/// Where queries leave from: the raw IGMP socket on the LB's segment (if
/// it serves an IPv4 group), the raw ICMPv6 socket of MLD (if it serves an
/// IPv6 group) and, where `--ttl` is above 1, the routed query's UDP
/// socket (protocol §4.4).
pub struct Queriers {
    pub igmp: Option<IgmpSocket>,
    pub mld: Option<MldQuerier>,
    pub routed: Option<RoutedQuerier>,
}

/// The MLD socket and the LB's IPv6 address its queries carry.
pub struct MldQuerier {
    pub socket: MldSocket,
    pub lb: Ipv6Addr,
}

/// A group of a family the LB has no socket for: `start` opens one for
/// each family it configures, so this is a bug.
fn no_socket(family: &str) -> io::Error {
    io::Error::other(format!("no {family} socket is open for this group"))
}

/// The routed query's sockets, one per family the LB serves a group of,
/// each bound to the LB's address of that family, and the key their tags
/// are computed with.
pub struct RoutedQuerier {
    pub sockets: Vec<(IpAddr, RoutedSocket)>,
    pub key: Option<[u8; 16]>,
}

impl RoutedQuerier {
    /// Sends the routed query for `group` (protocol §4.4; version 2 for an
    /// IPv6 group, §9) from the LB's address of its family.
    fn query(&self, group: &GroupConfig, max_resp_ms: u16) -> io::Result<()> {
        let (lb, socket) = self
            .sockets
            .iter()
            .find(|(lb, _)| lb.is_ipv4() == group.group.is_ipv4())
            .ok_or_else(|| no_socket("routed query"))?;
        let query = Routed::Query {
            lb: *lb,
            max_resp_ms,
            sequence: system::realtime_ns(),
        };
        let payload = query
            .encode_from(*lb, self.key.as_ref())
            .ok_or_else(|| no_socket("routed query"))?;
        socket.send(payload.as_ref(), group.group, group.port)
    }
}

impl Queriers {
    /// Queries `group` with a max response time of `max_resp_tenths`: on
    /// the segment (IGMP or MLD), and across routers where configured.
    pub(crate) fn query(
        &self,
        params: &ControlParams,
        group: &GroupConfig,
        max_resp_tenths: u32,
    ) -> io::Result<()> {
        match group.group {
            IpAddr::V4(addr) => self
                .igmp
                .as_ref()
                .ok_or_else(|| no_socket("IGMP"))?
                .send(&igmp_query(params, max_resp_tenths), addr)?,
            IpAddr::V6(addr) => {
                let mld = self.mld.as_ref().ok_or_else(|| no_socket("MLD"))?;
                let max_resp_ms = max_resp_tenths.saturating_mul(100);
                mld.socket
                    .send(&mld_query(params, mld.lb, max_resp_ms), addr)?
            }
        }
        match &self.routed {
            Some(routed) => {
                let max_resp_ms = u16::try_from(max_resp_tenths * 100).unwrap_or(u16::MAX);
                routed.query(group, max_resp_ms)
            }
            None => Ok(()),
        }
    }
}

/// The IGMP query with a max response time of `max_resp_tenths`.
fn igmp_query(params: &ControlParams, max_resp_tenths: u32) -> Vec<u8> {
    let lb = params.lb_addr.octets();
    match params.query_version {
        QueryVersion::V2 => {
            let code = u8::try_from(max_resp_tenths).unwrap_or(u8::MAX);
            igmp_v2_message(IGMP_QUERY, code, lb).to_vec()
        }
        QueryVersion::V3 => igmp_v3_query(
            igmp_v3_code(max_resp_tenths),
            lb,
            u8::try_from(params.robustness).unwrap_or(u8::MAX),
            igmp_v3_code(params.query_interval.as_secs_f64().ceil().max(1.0) as u32),
        )
        .to_vec(),
    }
}

/// The MLD query carrying `lb` with a max response time of `max_resp_ms`
/// (protocol §9).
fn mld_query(params: &ControlParams, lb: Ipv6Addr, max_resp_ms: u32) -> Vec<u8> {
    match params.query_version {
        QueryVersion::V2 => mld_v1_query(max_resp_ms, lb.octets()).to_vec(),
        QueryVersion::V3 => mld_v2_query(
            max_resp_ms,
            lb.octets(),
            u8::try_from(params.robustness).unwrap_or(u8::MAX),
            igmp_v3_code(params.query_interval.as_secs_f64().ceil().max(1.0) as u32),
        )
        .to_vec(),
    }
}
