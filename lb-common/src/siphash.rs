//! SipHash-2-4 (Aumasson and Bernstein), the announcement tag of protocol §4.3.
//! One implementation for the XDP program, which tags fixed 24-byte
//! messages, and for the agent.

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[inline(always)]
fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = 0u64;
    for (i, b) in bytes.iter().enumerate().take(8) {
        word |= u64::from(*b) << (8 * i);
    }
    word
}

/// SipHash-2-4 of `data` under the 128-bit `key`.
#[inline(always)]
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = le_u64(&key[..8]);
    let k1 = le_u64(&key[8..]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let full = data.len() / 8 * 8;
    let mut at = 0;
    while at < full {
        let m = le_u64(&data[at..at + 8]);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
        at += 8;
    }
    let last = le_u64(&data[full..]) | (data.len() as u64) << 56;
    v[3] ^= last;
    round(&mut v);
    round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Length of the tagged message: source (4), LB address (4), payload[0..16].
pub const TAGGED_LEN: usize = 24;

/// The message an announcement's tag covers (protocol §4.3).
#[inline(always)]
pub fn tagged_message(src: [u8; 4], lb: [u8; 4], head: &[u8; 16]) -> [u8; TAGGED_LEN] {
    let mut msg = [0u8; TAGGED_LEN];
    msg[..4].copy_from_slice(&src);
    msg[4..8].copy_from_slice(&lb);
    msg[8..].copy_from_slice(head);
    msg
}

/// Length of an IPv6 announcement's tagged message: source (16), LB
/// address (16), payload[0..16].
pub const TAGGED6_LEN: usize = 48;

/// The message an IPv6 announcement's tag covers (protocol §9).
#[inline(always)]
pub fn tagged_message6(src: [u8; 16], lb: [u8; 16], head: &[u8; 16]) -> [u8; TAGGED6_LEN] {
    let mut msg = [0u8; TAGGED6_LEN];
    msg[..16].copy_from_slice(&src);
    msg[16..32].copy_from_slice(&lb);
    msg[32..].copy_from_slice(head);
    msg
}

/// The tag under `key` of a message from `src` to the LB at `lb` whose
/// first 16 bytes are `head`, in either family: an announcement's tag
/// (protocol §4.3, §9) and its age extension's. A pair of mixed families
/// never verifies on an LB; it is tagged as IPv6 with the IPv4 address mapped.
pub fn tag_between(
    key: &[u8; 16],
    src: core::net::IpAddr,
    lb: core::net::IpAddr,
    head: &[u8; 16],
) -> u64 {
    use core::net::IpAddr;
    match (src, lb) {
        (IpAddr::V4(src), IpAddr::V4(lb)) => {
            siphash24(key, &tagged_message(src.octets(), lb.octets(), head))
        }
        (src, lb) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            siphash24(key, &tagged_message6(v6(src), v6(lb), head))
        }
    }
}

/// The message a routed query's or report's tag covers (protocol §4.4):
/// source (4), payload[0..20]; as long as an announcement's.
#[inline(always)]
pub fn routed_tagged_message(src: [u8; 4], head: &[u8; 20]) -> [u8; TAGGED_LEN] {
    let mut msg = [0u8; TAGGED_LEN];
    msg[..4].copy_from_slice(&src);
    msg[4..].copy_from_slice(head);
    msg
}

/// The message an IPv6 routed query's or report's tag covers (protocol
/// §9): source (16), payload[0..32]; as long as an IPv6 announcement's.
#[inline(always)]
pub fn routed_tagged_message6(src: [u8; 16], head: &[u8; 32]) -> [u8; TAGGED6_LEN] {
    let mut msg = [0u8; TAGGED6_LEN];
    msg[..16].copy_from_slice(&src);
    msg[16..].copy_from_slice(head);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    fn message(len: u8) -> [u8; 64] {
        let mut m = [0u8; 64];
        for i in 0..len {
            m[usize::from(i)] = i;
        }
        m
    }

    #[test]
    fn reference_vectors() {
        // From the SipHash paper and its reference implementation
        // (key 00..0f, message 00 01 02 .. of the given length).
        assert_eq!(siphash24(&KEY, &message(0)[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&KEY, &message(15)[..15]), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&KEY, &message(8)[..8]), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn every_bit_of_the_message_and_key_matters() {
        let msg = tagged_message([10, 0, 0, 2], [10, 0, 0, 1], &[7; 16]);
        let tag = siphash24(&KEY, &msg);
        for bit in 0..TAGGED_LEN * 8 {
            let mut flipped = msg;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(siphash24(&KEY, &flipped), tag, "bit {bit}");
        }
        let mut other_key = KEY;
        other_key[15] ^= 0x80;
        assert_ne!(siphash24(&other_key, &msg), tag);
    }
}
