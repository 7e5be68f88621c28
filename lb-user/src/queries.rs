//! The LB's queries (protocol §4.1, §4.4): an IGMP query carrying the LB's
//! address on the segment and, across multicast routers, a routed UDP query.
use lb_common::wire::{IGMP_QUERY, Routed, igmp_v2_message, igmp_v3_code, igmp_v3_query};
use lb_host::{igmp_socket::IgmpSocket, routed_socket::RoutedSocket, system};

use crate::{control::ControlParams, maps::GroupConfig};

/// The layout of the LB's query (protocol §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryVersion {
    /// The original 8 bytes: hosts that hear it fall back to IGMPv2 and
    /// rarely send a leave.
    V2,
    /// 12 bytes: hosts stay in IGMPv3 mode and report leaving the group at
    /// once, even when the agent is killed.
    V3,
}

/// Where queries leave from: the raw IGMP socket on the LB's segment and,
/// where `--ttl` is above 1, the routed query's UDP socket (protocol §4.4).
pub struct Queriers {
    pub igmp: IgmpSocket,
    pub routed: Option<RoutedQuerier>,
}

/// The routed query's socket and the key its tag is computed with.
pub struct RoutedQuerier {
    pub socket: RoutedSocket,
    pub key: Option<[u8; 16]>,
}

impl Queriers {
    /// Queries `group` with a max response time of `max_resp_tenths`: on
    /// the segment, and across routers where configured.
    pub(crate) fn query(
        &self,
        params: &ControlParams,
        group: &GroupConfig,
        max_resp_tenths: u32,
    ) -> std::io::Result<()> {
        self.igmp
            .send(&igmp_query(params, max_resp_tenths), group.group)?;
        if let Some(routed) = &self.routed {
            let lb = params.lb_addr.octets();
            let query = Routed::Query {
                lb,
                max_resp_ms: u16::try_from(max_resp_tenths * 100).unwrap_or(u16::MAX),
                sequence: system::realtime_ns(),
            };
            routed.socket.send(
                &query.encode(lb, routed.key.as_ref()),
                group.group,
                group.port,
            )?;
        }
        Ok(())
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
