//! Wire formats of protocol §4: the LB's query, membership reports and
//! the UDP announcement. Offsets are shared with the XDP parser; the
//! encoders and parsers are used by userspace and the packet tests.
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::siphash::tag_between;

/// Announcement magic, `LBAN`.
pub const ANNOUNCE_MAGIC: [u8; 4] = *b"LBAN";
/// Announcement payload version this code speaks.
pub const ANNOUNCE_VERSION: u8 = 1;
/// Length of a v1 announcement payload.
pub const ANNOUNCE_V1_LEN: usize = 24;
/// Weight of a backend that did not announce one.
pub const DEFAULT_WEIGHT: u16 = 100;
/// Flag: remove me now.
pub const FLAG_LEAVING: u8 = 1 << 0;
/// Flag: keep me registered, no new flows.
pub const FLAG_DRAINING: u8 = 1 << 1;
/// Flag: my service check fails: keep me listed, send me no traffic at all
/// (my flows move).
pub const FLAG_DOWN: u8 = 1 << 2;

pub const ANNOUNCE_OFF_VERSION: usize = 4;
pub const ANNOUNCE_OFF_FLAGS: usize = 5;
pub const ANNOUNCE_OFF_WEIGHT: usize = 6;
pub const ANNOUNCE_OFF_SEQUENCE: usize = 8;
pub const ANNOUNCE_OFF_TAG: usize = 16;

/// Magic of the registration-age extension after a v1 payload, `LBRA`.
pub const AGE_MAGIC: [u8; 4] = *b"LBRA";
/// Length of the extension: magic, seconds registered, tag.
pub const AGE_EXTENSION_LEN: usize = 16;
pub const AGE_OFF_SECONDS: usize = 4;
pub const AGE_OFF_TAG: usize = 8;

/// The registration-age extension (protocol §4.3): how long the backend
/// has been registered, in seconds (saturating), after its v1 payload
/// whose `sequence` the tag binds it to. Its tag is SipHash-2-4 over
/// `src ‖ LB ‖ extension[0..8] ‖ sequence` (all zero without a key).
/// XDP passes the announcement that registers a backend up to lb-user,
/// which reads it ([`registration_age`]), so that a freshly started LB
/// knows which backends are older than its second-chance window; LBs that
/// do not know it ignore bytes after the v1 payload.
pub fn age_extension(
    seconds: u32,
    sequence: u64,
    key: Option<&[u8; 16]>,
    (src, lb): (IpAddr, IpAddr),
) -> [u8; AGE_EXTENSION_LEN] {
    let mut out = [0u8; AGE_EXTENSION_LEN];
    out[..4].copy_from_slice(&AGE_MAGIC);
    out[AGE_OFF_SECONDS..AGE_OFF_TAG].copy_from_slice(&seconds.to_be_bytes());
    if let Some(key) = key {
        let tag = tag_between(key, src, lb, &age_tagged_head(&out, sequence));
        out[AGE_OFF_TAG..].copy_from_slice(&tag.to_le_bytes());
    }
    out
}

/// The seconds the age extension after the v1 `payload` from `src` to `lb`
/// says the backend has been registered, if it is there and, with `keys`,
/// its tag verifies under one of them (without keys the tag is not read).
pub fn registration_age(
    payload: &[u8],
    keys: &[[u8; 16]],
    (src, lb): (IpAddr, IpAddr),
) -> Option<u32> {
    let head = AnnouncementV1::parse(payload)?;
    let extension: &[u8; AGE_EXTENSION_LEN] = payload
        .get(ANNOUNCE_V1_LEN..ANNOUNCE_V1_LEN + AGE_EXTENSION_LEN)?
        .try_into()
        .ok()?;
    if extension[..4] != AGE_MAGIC {
        return None;
    }
    let tag = u64::from_le_bytes(extension[AGE_OFF_TAG..].try_into().ok()?);
    let tagged = age_tagged_head(extension, head.sequence);
    let verifies = |key: &[u8; 16]| tag_between(key, src, lb, &tagged) == tag;
    if !keys.is_empty() && !keys.iter().any(verifies) {
        return None;
    }
    Some(u32::from_be_bytes(
        extension[AGE_OFF_SECONDS..AGE_OFF_TAG].try_into().ok()?,
    ))
}

/// The 16 bytes an age extension's tag covers after the two addresses:
/// the extension's first 8 and the announcement's sequence.
fn age_tagged_head(extension: &[u8; AGE_EXTENSION_LEN], sequence: u64) -> [u8; 16] {
    let mut head = [0u8; 16];
    head[..AGE_OFF_TAG].copy_from_slice(&extension[..AGE_OFF_TAG]);
    head[AGE_OFF_TAG..].copy_from_slice(&sequence.to_be_bytes());
    head
}

/// IGMP message types.
pub const IGMP_QUERY: u8 = 0x11;
pub const IGMP_V1_REPORT: u8 = 0x12;
pub const IGMP_V2_REPORT: u8 = 0x16;
pub const IGMP_V2_LEAVE: u8 = 0x17;
pub const IGMP_V3_REPORT: u8 = 0x22;
/// IGMPv3 group record type "change to include mode"; with no sources it is a leave.
pub const IGMP_V3_CHANGE_TO_INCLUDE: u8 = 3;
/// Length of an IGMPv1/v2 message and of the LB's v2-layout query.
pub const IGMP_V2_LEN: usize = 8;
/// Length of the LB's IGMPv3-layout query (no sources), protocol §4.1.
pub const IGMP_V3_QUERY_LEN: usize = 12;
/// Multicast Router Discovery advertisement (RFC 4286).
pub const IGMP_MRD_ADVERTISEMENT: u8 = 0x30;
/// Length of an MRD advertisement.
pub const IGMP_MRD_LEN: usize = 8;
/// All-snoopers group, where MRD advertisements go (RFC 4286).
pub const ALL_SNOOPERS: [u8; 4] = [224, 0, 0, 106];
/// IP protocol number of IGMP.
pub const IPPROTO_IGMP: u8 = 2;
/// IP Router Alert option (RFC 2113), as carried in queries and reports.
pub const IP_ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// A v1 announcement payload (protocol §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnouncementV1 {
    pub flags: u8,
    pub weight: u16,
    pub sequence: u64,
    pub tag: u64,
}

impl AnnouncementV1 {
    pub fn encode(&self) -> [u8; ANNOUNCE_V1_LEN] {
        let mut out = [0u8; ANNOUNCE_V1_LEN];
        out[..4].copy_from_slice(&ANNOUNCE_MAGIC);
        out[ANNOUNCE_OFF_VERSION] = ANNOUNCE_VERSION;
        out[ANNOUNCE_OFF_FLAGS] = self.flags;
        out[ANNOUNCE_OFF_WEIGHT..ANNOUNCE_OFF_SEQUENCE].copy_from_slice(&self.weight.to_be_bytes());
        out[ANNOUNCE_OFF_SEQUENCE..ANNOUNCE_OFF_TAG].copy_from_slice(&self.sequence.to_be_bytes());
        out[ANNOUNCE_OFF_TAG..].copy_from_slice(&self.tag.to_le_bytes());
        out
    }

    /// Encodes with the tag under `key`, if any, of an announcement from
    /// `src` to the LB at `lb` in either family (protocol §4.3, §9).
    pub fn encode_between(
        &self,
        key: Option<&[u8; 16]>,
        src: IpAddr,
        lb: IpAddr,
    ) -> [u8; ANNOUNCE_V1_LEN] {
        match key {
            Some(key) => self.encode_with_tag(|head| tag_between(key, src, lb, head)),
            None => self.encode(),
        }
    }

    /// Encodes with the tag computed under `key` for an announcement from
    /// `src` to the LB at `lb` (protocol §4.3); the `tag` field is ignored.
    pub fn encode_tagged(
        &self,
        key: &[u8; 16],
        src: [u8; 4],
        lb: [u8; 4],
    ) -> [u8; ANNOUNCE_V1_LEN] {
        self.encode_between(
            Some(key),
            Ipv4Addr::from(src).into(),
            Ipv4Addr::from(lb).into(),
        )
    }

    /// Encodes with the tag of an IPv6 announcement from `src` to the LB
    /// at `lb` (protocol §9).
    pub fn encode_tagged6(
        &self,
        key: &[u8; 16],
        src: [u8; 16],
        lb: [u8; 16],
    ) -> [u8; ANNOUNCE_V1_LEN] {
        self.encode_between(
            Some(key),
            Ipv6Addr::from(src).into(),
            Ipv6Addr::from(lb).into(),
        )
    }

    /// Encodes with the tag `tag` computes over the payload's first 16 bytes.
    fn encode_with_tag(&self, tag: impl FnOnce(&[u8; 16]) -> u64) -> [u8; ANNOUNCE_V1_LEN] {
        let mut out = self.encode();
        let mut head = [0u8; 16];
        head.copy_from_slice(&out[..ANNOUNCE_OFF_TAG]);
        out[ANNOUNCE_OFF_TAG..].copy_from_slice(&tag(&head).to_le_bytes());
        out
    }

    /// Parses a v1 payload; `None` for anything else (which, without a key,
    /// still registers its source as a plain announcement).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        if payload.len() < ANNOUNCE_V1_LEN
            || payload[..4] != ANNOUNCE_MAGIC
            || payload[ANNOUNCE_OFF_VERSION] != ANNOUNCE_VERSION
        {
            return None;
        }
        let be_u64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[at..at + 8]);
            b
        };
        Some(Self {
            flags: payload[ANNOUNCE_OFF_FLAGS],
            weight: u16::from_be_bytes([
                payload[ANNOUNCE_OFF_WEIGHT],
                payload[ANNOUNCE_OFF_WEIGHT + 1],
            ]),
            sequence: u64::from_be_bytes(be_u64(ANNOUNCE_OFF_SEQUENCE)),
            tag: u64::from_le_bytes(be_u64(ANNOUNCE_OFF_TAG)),
        })
    }
}

/// Routed query and report magic, `LBQY` (protocol §4.4).
pub const ROUTED_MAGIC: [u8; 4] = *b"LBQY";
/// Routed message version of IPv4 groups.
pub const ROUTED_VERSION: u8 = 1;
/// Length of an IPv4 routed query or report.
pub const ROUTED_LEN: usize = 28;
pub const ROUTED_OFF_VERSION: usize = 4;
pub const ROUTED_OFF_KIND: usize = 5;
pub const ROUTED_OFF_MAX_RESP: usize = 6;
pub const ROUTED_OFF_ADDR: usize = 8;
pub const ROUTED_OFF_SEQUENCE: usize = 12;
pub const ROUTED_OFF_TAG: usize = 20;
/// Routed message version of IPv6 groups (protocol §9): 16-byte addresses.
pub const ROUTED6_VERSION: u8 = 2;
/// Length of an IPv6 routed query or report.
pub const ROUTED6_LEN: usize = 40;
pub const ROUTED6_OFF_SEQUENCE: usize = 24;
pub const ROUTED6_OFF_TAG: usize = 32;
/// Routed message kinds.
pub const ROUTED_KIND_QUERY: u8 = 1;
pub const ROUTED_KIND_REPORT: u8 = 2;

/// The address of a routed message's family, which sets its layout:
/// `[u8; 4]` for version 1, `[u8; 16]` for version 2 (protocol §4.4, §9).
pub trait RoutedAddr: Copy + Eq + core::fmt::Debug + AsRef<[u8]> + AsMut<[u8]> + Default {
    const VERSION: u8;
    /// The whole message.
    type Payload: Copy + AsRef<[u8]> + AsMut<[u8]>;
    const EMPTY: Self::Payload;
    /// Where the sequence starts (the address ends).
    const OFF_SEQUENCE: usize;
    /// Where the tag starts (the sequence ends).
    const OFF_TAG: usize;
}

impl RoutedAddr for [u8; 4] {
    const VERSION: u8 = ROUTED_VERSION;
    type Payload = [u8; ROUTED_LEN];
    const EMPTY: Self::Payload = [0; ROUTED_LEN];
    const OFF_SEQUENCE: usize = ROUTED_OFF_SEQUENCE;
    const OFF_TAG: usize = ROUTED_OFF_TAG;
}

impl RoutedAddr for [u8; 16] {
    const VERSION: u8 = ROUTED6_VERSION;
    type Payload = [u8; ROUTED6_LEN];
    const EMPTY: Self::Payload = [0; ROUTED6_LEN];
    const OFF_SEQUENCE: usize = ROUTED6_OFF_SEQUENCE;
    const OFF_TAG: usize = ROUTED6_OFF_TAG;
}

/// A routed query or report (protocol §4.4): UDP to group:port, replicated by
/// multicast routers, which never forward IGMP or MLD. `A` is the family's
/// address: `[u8; 4]` (version 1) or `[u8; 16]` (version 2, §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed<A = [u8; 4]> {
    /// From an LB: its unicast address, and how long members may wait.
    Query {
        lb: A,
        max_resp_ms: u16,
        sequence: u64,
    },
    /// From a member: the group it reports.
    Report { group: A, sequence: u64 },
}

impl<A: RoutedAddr> Routed<A> {
    /// The payload sent from `src`, tagged under `key` (a zero tag without one).
    pub fn encode(&self, src: A, key: Option<&[u8; 16]>) -> A::Payload {
        let (kind, max_resp_ms, addr, sequence) = match *self {
            Routed::Query {
                lb,
                max_resp_ms,
                sequence,
            } => (ROUTED_KIND_QUERY, max_resp_ms, lb, sequence),
            Routed::Report { group, sequence } => (ROUTED_KIND_REPORT, 0, group, sequence),
        };
        let mut payload = A::EMPTY;
        let out = payload.as_mut();
        out[..4].copy_from_slice(&ROUTED_MAGIC);
        out[ROUTED_OFF_VERSION] = A::VERSION;
        out[ROUTED_OFF_KIND] = kind;
        out[ROUTED_OFF_MAX_RESP..ROUTED_OFF_ADDR].copy_from_slice(&max_resp_ms.to_be_bytes());
        out[ROUTED_OFF_ADDR..A::OFF_SEQUENCE].copy_from_slice(addr.as_ref());
        out[A::OFF_SEQUENCE..A::OFF_TAG].copy_from_slice(&sequence.to_be_bytes());
        if let Some(key) = key {
            let tag = routed_tag(key, src, out);
            out[A::OFF_TAG..].copy_from_slice(&tag.to_le_bytes());
        }
        payload
    }

    /// Parses a payload from `src`; with a `key`, only one whose tag
    /// verifies. `None` for anything else (another version included).
    pub fn parse(payload: &[u8], src: A, key: Option<&[u8; 16]>) -> Option<Self> {
        let payload = payload.get(..A::OFF_TAG + 8)?;
        if payload[..4] != ROUTED_MAGIC || payload[ROUTED_OFF_VERSION] != A::VERSION {
            return None;
        }
        let u64_at =
            |from: usize| -> Option<[u8; 8]> { payload.get(from..from + 8)?.try_into().ok() };
        if let Some(key) = key
            && routed_tag(key, src, payload) != u64::from_le_bytes(u64_at(A::OFF_TAG)?)
        {
            return None;
        }
        let mut addr = A::default();
        addr.as_mut()
            .copy_from_slice(&payload[ROUTED_OFF_ADDR..A::OFF_SEQUENCE]);
        let sequence = u64::from_be_bytes(u64_at(A::OFF_SEQUENCE)?);
        match payload[ROUTED_OFF_KIND] {
            ROUTED_KIND_QUERY => Some(Routed::Query {
                lb: addr,
                max_resp_ms: u16::from_be_bytes([
                    payload[ROUTED_OFF_MAX_RESP],
                    payload[ROUTED_OFF_MAX_RESP + 1],
                ]),
                sequence,
            }),
            ROUTED_KIND_REPORT => Some(Routed::Report {
                group: addr,
                sequence,
            }),
            _ => None,
        }
    }
}

impl<A> Routed<A> {
    /// The same message with its address mapped by `f`.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> Routed<B> {
        match self {
            Routed::Query {
                lb,
                max_resp_ms,
                sequence,
            } => Routed::Query {
                lb: f(lb),
                max_resp_ms,
                sequence,
            },
            Routed::Report { group, sequence } => Routed::Report {
                group: f(group),
                sequence,
            },
        }
    }
}

/// An encoded routed message of either version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutedBytes {
    bytes: [u8; ROUTED6_LEN],
    len: usize,
}

impl AsRef<[u8]> for RoutedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Routed<IpAddr> {
    /// Encodes in the version of the family of `src` (version 1 for IPv4,
    /// 2 for IPv6); `None` if the message's address is of the other family.
    pub fn encode_from(&self, src: IpAddr, key: Option<&[u8; 16]>) -> Option<RoutedBytes> {
        let mut out = RoutedBytes {
            bytes: [0; ROUTED6_LEN],
            len: 0,
        };
        let v4 = |a: IpAddr| match a {
            IpAddr::V4(a) => Some(a.octets()),
            IpAddr::V6(_) => None,
        };
        let v6 = |a: IpAddr| match a {
            IpAddr::V6(a) => Some(a.octets()),
            IpAddr::V4(_) => None,
        };
        let encoded: &[u8] = match src {
            IpAddr::V4(src) => &self.try_map(v4)?.encode(src.octets(), key),
            IpAddr::V6(src) => &self.try_map(v6)?.encode(src.octets(), key),
        };
        out.len = encoded.len();
        out.bytes[..out.len].copy_from_slice(encoded);
        Some(out)
    }

    /// Parses a payload from `src` in the version of its family.
    pub fn parse_from(payload: &[u8], src: IpAddr, key: Option<&[u8; 16]>) -> Option<Self> {
        match src {
            IpAddr::V4(src) => {
                Routed::parse(payload, src.octets(), key).map(|r| r.map(IpAddr::from))
            }
            IpAddr::V6(src) => {
                Routed::parse(payload, src.octets(), key).map(|r| r.map(IpAddr::from))
            }
        }
    }

    fn try_map<B>(&self, f: impl FnOnce(IpAddr) -> Option<B>) -> Option<Routed<B>> {
        let addr = match *self {
            Routed::Query { lb, .. } => lb,
            Routed::Report { group, .. } => group,
        };
        let mapped = f(addr)?;
        Some(self.map(|_| mapped))
    }
}

/// The tag of a routed payload from `src` under `key`: over `src` and the
/// payload up to its tag.
fn routed_tag<A: RoutedAddr>(key: &[u8; 16], src: A, payload: &[u8]) -> u64 {
    let src = src.as_ref();
    let mut message = [0u8; 16 + ROUTED6_OFF_TAG];
    message[..src.len()].copy_from_slice(src);
    message[src.len()..src.len() + A::OFF_TAG].copy_from_slice(&payload[..A::OFF_TAG]);
    crate::siphash::siphash24(key, &message[..src.len() + A::OFF_TAG])
}

/// Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    fold_checksum(ones_sum(0, data))
}

/// `sum` plus the 16-bit words of `data` (a last odd byte as the high
/// half of a word), unfolded: the parts of a checksum over several
/// pieces, such as a pseudo-header and a message.
pub fn ones_sum(mut sum: u32, data: &[u8]) -> u32 {
    let (pairs, rest) = data.as_chunks::<2>();
    for pair in pairs {
        sum += u32::from(u16::from_be_bytes(*pair));
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// The checksum of a sum of [`ones_sum`] parts.
pub fn fold_checksum(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMPv6 checksum (RFC 4443 2.3) of `message` (its checksum field zero)
/// from and to the addresses `addrs` (source then destination, as an
/// IPv6 header holds them).
pub fn icmpv6_checksum(addrs: &[u8; 32], message: &[u8]) -> u16 {
    let pseudo = ones_sum(0, addrs) + message.len() as u32 + u32::from(crate::mld::IPPROTO_ICMPV6);
    fold_checksum(ones_sum(pseudo, message))
}

/// An 8-byte IGMPv1/v2-layout message with its checksum filled in.
pub fn igmp_v2_message(kind: u8, max_resp_code: u8, group: [u8; 4]) -> [u8; IGMP_V2_LEN] {
    let mut msg = [
        kind,
        max_resp_code,
        0,
        0,
        group[0],
        group[1],
        group[2],
        group[3],
    ];
    let sum = internet_checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// RFC 3376 4.1.1 and 4.1.7: the code of a time in units (tenths of a
/// second for the max response time, seconds for QQIC): the value itself
/// below 128, above that a 3-bit exponent and 4-bit mantissa (rounded down).
pub const fn igmp_v3_code(units: u32) -> u8 {
    float_code(units, 4) as u8
}

/// The time in units that an RFC 3376 code stands for.
pub const fn igmp_v3_units(code: u8) -> u32 {
    float_units(code as u32, 4)
}

/// The floating-point time codes of IGMPv3 and MLDv2 (RFC 3376 4.1.1,
/// RFC 3810 5.1.3), which differ only in the mantissa's width: the value
/// itself below `1 << (mant_bits + 3)`, above that that bit, a 3-bit
/// exponent and the mantissa, standing for `(mant | 1 << mant_bits) <<
/// (exp + 3)`; rounded down, saturating at the largest code.
pub(crate) const fn float_code(units: u32, mant_bits: u32) -> u32 {
    let flag = 1 << (mant_bits + 3);
    if units < flag {
        return units;
    }
    let implicit = 1 << mant_bits;
    let mut exp = 0u32;
    while exp < 7 && (units >> (exp + 3)) >= 2 * implicit {
        exp += 1;
    }
    let mant = (units >> (exp + 3)).saturating_sub(implicit);
    let mant = if mant >= implicit { implicit - 1 } else { mant };
    flag | (exp << mant_bits) | mant
}

/// The time a code of [`float_code`] stands for.
pub(crate) const fn float_units(code: u32, mant_bits: u32) -> u32 {
    let flag = 1 << (mant_bits + 3);
    if code < flag {
        return code;
    }
    let exp = (code >> mant_bits) & 0x07;
    let mant = code & ((1 << mant_bits) - 1);
    (mant | 1 << mant_bits) << (exp + 3)
}

/// The LB's IGMPv3-layout query (protocol §4.1): the LB's address in the group
/// field, `qrv` (robustness, at most 7), `qqic` (query interval code), no
/// sources; checksum filled in.
pub fn igmp_v3_query(max_resp_code: u8, lb: [u8; 4], qrv: u8, qqic: u8) -> [u8; IGMP_V3_QUERY_LEN] {
    let mut msg = [
        IGMP_QUERY,
        max_resp_code,
        0,
        0,
        lb[0],
        lb[1],
        lb[2],
        lb[3],
        qrv.min(7),
        qqic,
        0,
        0,
    ];
    let sum = internet_checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// A Multicast Router Discovery advertisement (RFC 4286 3): the
/// advertisement interval in seconds, the query interval in seconds and
/// the robustness variable; checksum filled in.
pub fn mrd_advertisement(
    interval_s: u8,
    query_interval_s: u16,
    robustness: u16,
) -> [u8; IGMP_MRD_LEN] {
    let mut msg = mrd_message(
        IGMP_MRD_ADVERTISEMENT,
        interval_s,
        query_interval_s,
        robustness,
    );
    let sum = internet_checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// A Multicast Router Advertisement of either family (RFC 4286): its
/// `kind`, the advertisement interval, the query interval and the
/// robustness; the checksum left zero.
pub(crate) fn mrd_message(
    kind: u8,
    interval_s: u8,
    query_interval_s: u16,
    robustness: u16,
) -> [u8; IGMP_MRD_LEN] {
    let [qi_hi, qi_lo] = query_interval_s.to_be_bytes();
    let [rv_hi, rv_lo] = robustness.to_be_bytes();
    [kind, interval_s, 0, 0, qi_hi, qi_lo, rv_hi, rv_lo]
}

/// An IGMP message as a member sees it, reduced to what the method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgmpMessage {
    /// The LB's query, in either layout: the group field carries the LB's
    /// address (protocol §4.1); the max response time in tenths of a second.
    Query {
        max_resp_tenths: u32,
        group_field: [u8; 4],
    },
    /// A v1 or v2 membership report for `group`.
    Report { group: [u8; 4] },
    /// Anything else (leaves, v3 reports, bad checksum, other types).
    Other,
}

/// Parses an IGMP message (the bytes after the IP header). A query of 8
/// bytes has the v2 layout, one of 12 or more the v3 layout (RFC 3376
/// 7.1), whose max response code may be a floating-point code. IGMPv3
/// reports are `Other`: agents send v2 reports, and suppression by a
/// kernel's v3 report is not required by the method.
pub fn parse_igmp(msg: &[u8]) -> IgmpMessage {
    if msg.len() < IGMP_V2_LEN || internet_checksum(msg) != 0 {
        return IgmpMessage::Other;
    }
    let group = [msg[4], msg[5], msg[6], msg[7]];
    match msg[0] {
        IGMP_QUERY if msg.len() == IGMP_V2_LEN => IgmpMessage::Query {
            max_resp_tenths: u32::from(msg[1]),
            group_field: group,
        },
        IGMP_QUERY if msg.len() >= IGMP_V3_QUERY_LEN => IgmpMessage::Query {
            max_resp_tenths: igmp_v3_units(msg[1]),
            group_field: group,
        },
        IGMP_V1_REPORT | IGMP_V2_REPORT => IgmpMessage::Report { group },
        _ => IgmpMessage::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_layout_matches_spec_4_3() {
        let a = AnnouncementV1 {
            flags: FLAG_DRAINING,
            weight: 0x0102,
            sequence: 0x0102_0304_0506_0708,
            tag: 0x1122_3344_5566_7788,
        };
        let bytes = a.encode();
        assert_eq!(&bytes[..4], b"LBAN");
        assert_eq!(bytes[4..8], [1, FLAG_DRAINING, 0x01, 0x02]);
        assert_eq!(bytes[8..16], [1, 2, 3, 4, 5, 6, 7, 8]);
        // The tag is in SipHash's little-endian byte order.
        assert_eq!(
            bytes[16..24],
            [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(AnnouncementV1::parse(&bytes), Some(a));
    }

    /// The registration-age extension: read back as written; with keys,
    /// only under a tag one of them verifies, bound to the sequence and
    /// both addresses; absent or cut short, no age.
    #[test]
    fn registration_age_reads_only_what_verifies() {
        let (key, other) = ([7u8; 16], [8u8; 16]);
        let addrs: (IpAddr, IpAddr) = ([10, 0, 0, 11].into(), [10, 0, 0, 1].into());
        let payload = |sequence: u64, signer: Option<&[u8; 16]>| {
            let head = AnnouncementV1 {
                flags: 0,
                weight: 100,
                sequence,
                tag: 0,
            }
            .encode();
            [&head[..], &age_extension(3600, sequence, signer, addrs)].concat()
        };
        let signed = payload(5, Some(&key));
        assert_eq!(registration_age(&signed, &[key], addrs), Some(3600));
        assert_eq!(registration_age(&signed, &[other, key], addrs), Some(3600));
        assert_eq!(registration_age(&signed, &[other], addrs), None);
        let moved = ([10, 0, 0, 12].into(), addrs.1);
        assert_eq!(registration_age(&signed, &[key], moved), None);
        let mut replayed_onto = payload(6, Some(&key));
        replayed_onto[ANNOUNCE_V1_LEN..].copy_from_slice(&signed[ANNOUNCE_V1_LEN..]);
        assert_eq!(registration_age(&replayed_onto, &[key], addrs), None);
        assert_eq!(registration_age(&payload(5, None), &[], addrs), Some(3600));
        assert_eq!(registration_age(&signed[..39], &[key], addrs), None);
        assert_eq!(
            registration_age(&signed[..ANNOUNCE_V1_LEN], &[], addrs),
            None
        );
    }

    #[test]
    fn other_payloads_are_not_v1() {
        let good = AnnouncementV1 {
            flags: 0,
            weight: 1,
            sequence: 1,
            tag: 0,
        }
        .encode();
        assert_eq!(AnnouncementV1::parse(&good[..23]), None);
        let mut wrong_version = good;
        wrong_version[4] = 2;
        assert_eq!(AnnouncementV1::parse(&wrong_version), None);
        let mut wrong_magic = good;
        wrong_magic[0] = b'X';
        assert_eq!(AnnouncementV1::parse(&wrong_magic), None);
        assert_eq!(AnnouncementV1::parse(b""), None);
    }

    #[test]
    fn igmp_messages_round_trip_with_checksum() {
        let query = igmp_v2_message(IGMP_QUERY, 10, [10, 0, 0, 1]);
        assert_eq!(internet_checksum(&query), 0);
        assert_eq!(
            parse_igmp(&query),
            IgmpMessage::Query {
                max_resp_tenths: 10,
                group_field: [10, 0, 0, 1]
            }
        );
        let report = igmp_v2_message(IGMP_V2_REPORT, 0, [239, 192, 0, 1]);
        assert_eq!(
            parse_igmp(&report),
            IgmpMessage::Report {
                group: [239, 192, 0, 1]
            }
        );
        let mut corrupt = report;
        corrupt[5] ^= 1;
        assert_eq!(parse_igmp(&corrupt), IgmpMessage::Other);
        assert_eq!(parse_igmp(&report[..7]), IgmpMessage::Other);
        // A 9- to 11-byte query is neither layout.
        let mut odd = [0u8; 10];
        odd[..8].copy_from_slice(&query);
        let sum = internet_checksum(&{
            let mut z = odd;
            z[2] = 0;
            z[3] = 0;
            z
        });
        odd[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(internet_checksum(&odd), 0);
        assert_eq!(parse_igmp(&odd), IgmpMessage::Other);
    }

    #[test]
    fn v3_query_layout_matches_spec_4_1() {
        let query = igmp_v3_query(igmp_v3_code(300), [10, 0, 0, 1], 2, igmp_v3_code(125));
        assert_eq!(internet_checksum(&query), 0);
        assert_eq!(query.len(), 12);
        assert_eq!(query[..2], [IGMP_QUERY, 0x92]);
        assert_eq!(query[4..], [10, 0, 0, 1, 2, 125, 0, 0]);
        // 300 tenths is 0x92: (2 | 0x10) << (1 + 3) = 288, rounded down.
        assert_eq!(
            parse_igmp(&query),
            IgmpMessage::Query {
                max_resp_tenths: 288,
                group_field: [10, 0, 0, 1]
            }
        );
        assert_eq!(igmp_v3_query(5, [10, 0, 0, 1], 9, 1)[8], 7, "QRV is 3 bits");
    }

    #[test]
    fn v3_codes_round_down_and_cover_the_range() {
        for units in [0, 1, 10, 127] {
            assert_eq!(igmp_v3_units(igmp_v3_code(units)), units);
        }
        assert_eq!(igmp_v3_code(128), 0x80);
        assert_eq!(igmp_v3_units(0x80), 128);
        assert_eq!(igmp_v3_units(0xff), 31744);
        assert_eq!(igmp_v3_code(u32::MAX), 0xff);
        for units in (128..40_000).step_by(7) {
            let back = igmp_v3_units(igmp_v3_code(units));
            assert!(
                back <= units.max(128) && back * 17 / 16 + 8 >= units.min(31744),
                "{units} -> {back}"
            );
        }
    }

    #[test]
    fn mrd_advertisement_layout_matches_rfc_4286() {
        let adv = mrd_advertisement(20, 1, 2);
        assert_eq!(internet_checksum(&adv), 0);
        assert_eq!(adv[..2], [0x30, 20]);
        assert_eq!(adv[4..], [0, 1, 0, 2]);
    }

    #[test]
    fn routed_layout_matches_spec_4_4_and_verifies_its_tag() {
        let key = [7u8; 16];
        let query = Routed::Query {
            lb: [10, 0, 0, 1],
            max_resp_ms: 0x0102,
            sequence: 0x0102_0304_0506_0708,
        };
        let bytes = query.encode([10, 0, 0, 1], Some(&key));
        assert_eq!(&bytes[..4], b"LBQY");
        assert_eq!(bytes[4..12], [1, ROUTED_KIND_QUERY, 1, 2, 10, 0, 0, 1]);
        assert_eq!(bytes[12..20], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            Routed::parse(&bytes, [10, 0, 0, 1], Some(&key)),
            Some(query)
        );
        // Another source, key or byte: the tag no longer verifies.
        assert_eq!(Routed::parse(&bytes, [10, 0, 0, 9], Some(&key)), None);
        assert_eq!(Routed::parse(&bytes, [10, 0, 0, 1], Some(&[8; 16])), None);
        let mut flipped = bytes;
        flipped[13] ^= 1;
        assert_eq!(Routed::parse(&flipped, [10, 0, 0, 1], Some(&key)), None);
        let report = Routed::Report {
            group: [239, 192, 0, 1],
            sequence: 5,
        };
        let plain = report.encode([10, 1, 0, 2], None);
        assert_eq!(plain[5..12], [ROUTED_KIND_REPORT, 0, 0, 239, 192, 0, 1]);
        assert_eq!(plain[20..], [0; 8], "no key, zero tag");
        assert_eq!(Routed::parse(&plain, [10, 1, 0, 2], None), Some(report));
        assert_eq!(Routed::parse(&plain[..27], [10, 1, 0, 2], None), None);
        let mut other_kind = plain;
        other_kind[5] = 3;
        assert_eq!(Routed::parse(&other_kind, [10, 1, 0, 2], None), None);
    }

    #[test]
    fn routed_v2_layout_matches_spec_9_and_verifies_its_tag() {
        let key = [7u8; 16];
        let lb: [u8; 16] = core::array::from_fn(|i| 0x20 + i as u8);
        let member: [u8; 16] = core::array::from_fn(|i| 0x40 + i as u8);
        let group = [0xff, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x4c, 0x42];
        let query = Routed::Query {
            lb,
            max_resp_ms: 0x0102,
            sequence: 0x0102_0304_0506_0708,
        };
        let bytes = query.encode(lb, Some(&key));
        assert_eq!(bytes.len(), ROUTED6_LEN);
        assert_eq!(&bytes[..8], b"LBQY\x02\x01\x01\x02");
        assert_eq!(bytes[8..24], lb);
        assert_eq!(bytes[24..32], [1, 2, 3, 4, 5, 6, 7, 8]);
        let mut message = [0u8; 48];
        message[..16].copy_from_slice(&lb);
        message[16..].copy_from_slice(&bytes[..32]);
        assert_eq!(
            u64::from_le_bytes(bytes[32..].try_into().unwrap()),
            crate::siphash::siphash24(&key, &message),
            "the tag is over src IPv6 || payload[0..32]"
        );
        assert_eq!(Routed::parse(&bytes, lb, Some(&key)), Some(query));
        assert_eq!(Routed::parse(&bytes, member, Some(&key)), None);
        let report = Routed::Report { group, sequence: 5 };
        let plain = report.encode(member, None);
        assert_eq!(plain[32..], [0; 8], "no key, zero tag");
        assert_eq!(Routed::parse(&plain, member, None), Some(report));
        assert_eq!(Routed::parse(&plain[..39], member, None), None);
        assert_eq!(
            Routed::parse(&plain, [10, 1, 0, 2], None),
            None,
            "a v2 message is no v1 one"
        );
    }

    #[test]
    fn checksum_of_odd_length() {
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
        assert_eq!(internet_checksum(&[]), 0xffff);
    }
}
