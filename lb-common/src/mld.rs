//! MLD (protocol §9, RFC 2710 and RFC 3810), IGMP's place in IPv6: the
//! LB's query, whose multicast-address field carries the LB's unicast
//! IPv6 address, and the members' reports and leaves. Offsets are shared
//! with the XDP parser. The ICMPv6 checksum covers a pseudo-header, so the
//! encoders leave it zero for the kernel (a raw ICMPv6 socket fills it in)
//! and the parser trusts the kernel's check on receipt.

/// ICMPv6 types of MLD.
pub const MLD_QUERY: u8 = 130;
pub const MLD_V1_REPORT: u8 = 131;
pub const MLD_DONE: u8 = 132;
pub const MLD_V2_REPORT: u8 = 143;
/// Multicast Router Discovery advertisement for IPv6 (RFC 4286).
pub const MLD_MRD_ADVERTISEMENT: u8 = 151;
/// Length of an MLDv1 message (query, report, done) and of the LB's
/// MLDv1-layout query.
pub const MLD_V1_LEN: usize = 24;
/// Length of the LB's MLDv2-layout query (no sources).
pub const MLD_V2_QUERY_LEN: usize = 28;
/// Offset of the multicast-address field of MLDv1 messages and queries.
pub const MLD_OFF_ADDRESS: usize = 8;
/// Offset of an MLDv2 report's record count, and of its first record.
pub const MLD_V2_OFF_RECORDS: usize = 6;
pub const MLD_V2_FIRST_RECORD: usize = 8;
/// Length of an MLDv2 record without sources or auxiliary data.
pub const MLD_V2_RECORD_LEN: usize = 20;
/// All MLDv2-capable routers, where MLDv2 reports go (RFC 3810).
pub const ALL_MLDV2_ROUTERS: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16];
/// All snoopers, where MRD advertisements go (RFC 4286).
pub const ALL_SNOOPERS_V6: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x6a];
/// IPv6 next-header numbers the method meets.
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMPV6: u8 = 58;
/// The Hop-by-Hop Router Alert option for MLD (RFC 2711: type 5, length
/// 2, value 0), as carried in queries and reports.
pub const HOP_BY_HOP_ROUTER_ALERT_MLD: [u8; 4] = [5, 2, 0, 0];

/// The largest max response time an MLDv2 code can stand for, in ms.
pub const MLD_V2_MAX_RESP_MS: u32 = 0x1fff << 10;

/// The MLDv2 Maximum Response Code for `ms` milliseconds (RFC 3810
/// 5.1.3): exact below 32,768, else a floating-point code rounded down.
pub const fn mld_v2_code(ms: u32) -> u16 {
    crate::wire::float_code(ms, 12) as u16
}

/// The milliseconds an MLDv2 Maximum Response Code stands for.
pub const fn mld_v2_ms(code: u16) -> u32 {
    crate::wire::float_units(code as u32, 12)
}

/// The LB's MLDv1-layout query: `max_resp_ms` (saturating), the LB's
/// address in the multicast-address field.
pub fn mld_v1_query(max_resp_ms: u32, lb: [u8; 16]) -> [u8; MLD_V1_LEN] {
    let delay = u16::try_from(max_resp_ms).unwrap_or(u16::MAX);
    mld_v1_message(MLD_QUERY, delay, lb)
}

/// An MLDv1 message of `kind` (report, done, or a query with `delay`
/// ms) for `address`.
pub fn mld_v1_message(kind: u8, delay: u16, address: [u8; 16]) -> [u8; MLD_V1_LEN] {
    let mut msg = [0u8; MLD_V1_LEN];
    msg[0] = kind;
    msg[4..6].copy_from_slice(&delay.to_be_bytes());
    msg[MLD_OFF_ADDRESS..].copy_from_slice(&address);
    msg
}

/// The LB's MLDv2-layout query (protocol §9): the LB's address in the
/// multicast-address field, `qrv` (robustness, at most 7), `qqic` (the
/// query interval's code, as IGMPv3's), no sources.
pub fn mld_v2_query(max_resp_ms: u32, lb: [u8; 16], qrv: u8, qqic: u8) -> [u8; MLD_V2_QUERY_LEN] {
    let mut msg = [0u8; MLD_V2_QUERY_LEN];
    msg[..MLD_V1_LEN].copy_from_slice(&mld_v1_message(MLD_QUERY, 0, lb));
    msg[4..6].copy_from_slice(&mld_v2_code(max_resp_ms).to_be_bytes());
    msg[24] = qrv.min(7);
    msg[25] = qqic;
    msg
}

/// The MLD Multicast Router Advertisement (RFC 4286, ICMPv6 type 151, to
/// [`ALL_SNOOPERS_V6`]): a snooping switch then forwards MLD reports to
/// the LB's port (protocol §9). The kernel fills in the ICMPv6 checksum.
pub fn mld_mrd_advertisement(interval_s: u8, query_interval_s: u16, robustness: u16) -> [u8; 8] {
    crate::wire::mrd_message(
        MLD_MRD_ADVERTISEMENT,
        interval_s,
        query_interval_s,
        robustness,
    )
}

/// An MLD message as a member sees it, reduced to what the method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MldMessage {
    /// A query in either layout; `address` is its multicast-address
    /// field (the LB's address in the LB's query).
    Query { max_resp_ms: u32, address: [u8; 16] },
    /// An MLDv1 report for `group`.
    Report { group: [u8; 16] },
    /// Anything else (done, MLDv2 reports, other types, too short).
    Other,
}

/// Parses an MLD message (the ICMPv6 message, checksum already checked
/// by the kernel). A query of 24 bytes has the MLDv1 layout, one of 28 or
/// more the MLDv2 layout, whose max response code may be floating-point.
pub fn parse_mld(msg: &[u8]) -> MldMessage {
    let Some(address) = msg
        .get(MLD_OFF_ADDRESS..MLD_V1_LEN)
        .and_then(|a| <[u8; 16]>::try_from(a).ok())
    else {
        return MldMessage::Other;
    };
    let code = u16::from_be_bytes([msg[4], msg[5]]);
    match msg[0] {
        MLD_QUERY if msg.len() == MLD_V1_LEN => MldMessage::Query {
            max_resp_ms: u32::from(code),
            address,
        },
        MLD_QUERY if msg.len() >= MLD_V2_QUERY_LEN => MldMessage::Query {
            max_resp_ms: mld_v2_ms(code),
            address,
        },
        MLD_V1_REPORT => MldMessage::Report { group: address },
        _ => MldMessage::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn max_response_codes_round_trip_rfc_3810() {
        for ms in [0, 1, 1000, 0x7fff] {
            assert_eq!(mld_v2_ms(mld_v2_code(ms)), ms, "exact below 32768");
        }
        // 0x8000 = (0 | 0x1000) << 3: exponent 0, mantissa 0.
        assert_eq!(mld_v2_code(0x8000), 0x8000);
        assert_eq!(mld_v2_code(MLD_V2_MAX_RESP_MS), 0xffff);
        assert_eq!(mld_v2_code(u32::MAX), 0xffff, "saturates");
        for ms in [0x8000, 40_000, 100_000, 1_000_000, MLD_V2_MAX_RESP_MS] {
            let back = mld_v2_ms(mld_v2_code(ms));
            // A step of the 12-bit mantissa is at most ms / 4096.
            assert!(back <= ms && ms - back <= ms >> 12, "{ms} -> {back}");
        }
    }

    #[test]
    fn queries_carry_the_lb_address_in_either_layout() {
        let v1 = mld_v1_query(1000, LB);
        assert_eq!(v1[0], MLD_QUERY);
        assert_eq!(v1[4..6], 1000u16.to_be_bytes());
        assert_eq!(
            parse_mld(&v1),
            MldMessage::Query {
                max_resp_ms: 1000,
                address: LB
            }
        );
        let v2 = mld_v2_query(100_000, LB, 9, 125);
        assert_eq!(v2.len(), MLD_V2_QUERY_LEN);
        assert_eq!((v2[24], v2[25]), (7, 125), "QRV at most 7");
        let MldMessage::Query {
            max_resp_ms,
            address,
        } = parse_mld(&v2)
        else {
            panic!("not a query")
        };
        assert_eq!(address, LB);
        assert!(max_resp_ms <= 100_000 && max_resp_ms > 99_000);
    }

    #[test]
    fn reports_and_the_rest() {
        let group = [0xff, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x4c, 0x42];
        let report = mld_v1_message(MLD_V1_REPORT, 0, group);
        assert_eq!(parse_mld(&report), MldMessage::Report { group });
        assert_eq!(parse_mld(&report[..23]), MldMessage::Other);
        let done = mld_v1_message(MLD_DONE, 0, group);
        assert_eq!(parse_mld(&done), MldMessage::Other);
        let mut short_query = mld_v1_query(10, LB).to_vec();
        short_query.push(0);
        assert_eq!(
            parse_mld(&short_query),
            MldMessage::Other,
            "25 bytes: neither layout"
        );
    }
}
