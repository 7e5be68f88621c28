//! What each program counts: every packet moves exactly one counter, and
//! each counter belongs to one action of its program.

/// What the program does with a packet: the XDP action it returns.
/// lb-ebpf checks these values against the kernel's at compile time.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop = 1,
    Pass = 2,
    Tx = 3,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Drop, Action::Pass, Action::Tx];

    pub const fn name(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Pass => "pass",
            Action::Tx => "tx",
        }
    }
}

/// Declares a program's counters once: the enum, its `ALL`, each
/// counter's name and the action it ends in all come from one table.
macro_rules! counters {
    (
        $(#[$enum_doc:meta])*
        $enum:ident => $action_ty:ident {
            $( $(#[$doc:meta])* $variant:ident = $name:literal => $action:ident, )*
        }
    ) => {
        $(#[$enum_doc])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $enum {
            $( $(#[$doc])* $variant, )*
        }

        impl $enum {
            /// Every counter, in slot order.
            pub const ALL: &[$enum] = &[$($enum::$variant),*];

            /// The counter's name in `status` and docs/architecture.md.
            pub const fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)*
                }
            }

            /// Each counter's doc comment, as `doc = "..."` lines, in slot
            /// order: the counters table of docs/architecture.md.
            pub const DOCS: &[&str] = &[$( concat!($(stringify!($doc), "\n"),*) ),*];

            /// The action of every packet counted here.
            #[inline(always)]
            pub const fn action(self) -> $action_ty {
                match self {
                    $($enum::$variant => $action_ty::$action,)*
                }
            }
        }
    };
}

counters! {
    /// Why the XDP program did what it did with a packet: every packet
    /// moves exactly one counter, and each counter belongs to one
    /// [`Action`], so the totals per action follow from the counters.
    Counter => Action {
    /// Announcement accepted (a refresh, or a LEAVING for no registered backend).
    AnnounceAccepted = "announce_accepted" => Drop,
    /// Announcement that inserted a new backend; passed up for lb-user,
    /// which reads the age it carries (protocol §4.3).
    AnnounceRegistered = "announce_registered" => Pass,
    /// Announcement with LEAVING that removed a backend.
    AnnounceLeaving = "announce_leaving" => Drop,
    /// Announcement dropped: the server list is full.
    AnnounceTableFull = "announce_table_full" => Drop,
    /// Announcement dropped: source address or MAC not a unicast host.
    AnnounceBadSource = "announce_bad_source" => Drop,
    /// Announcement dropped: source not in the `--allow` prefixes.
    AnnounceNotAllowed = "announce_not_allowed" => Drop,
    /// Announcement dropped: a fragment, or a UDP length that does not fit.
    AnnounceMalformed = "announce_malformed" => Drop,
    /// Announcement dropped: a key is set and it is not a whole v1 payload.
    AuthMissing = "auth_missing" => Drop,
    /// Announcement dropped: the tag matches no key.
    AuthBadTag = "auth_bad_tag" => Drop,
    /// Announcement dropped: its sequence is not above the last accepted one.
    AuthReplay = "auth_replay" => Drop,
    /// Announcement dropped: its sequence is outside the allowed clock skew.
    AuthStale = "auth_stale" => Drop,
    /// IGMP membership report for a configured group, passed on.
    IgmpReport = "igmp_report" => Pass,
    /// IGMP leave for a configured group, passed on.
    IgmpLeave = "igmp_leave" => Pass,
    /// MLD report (v1, or v2 with a record) for a configured IPv6 group
    /// (protocol §9).
    MldReport = "mld_report" => Pass,
    /// MLD leave (Done, or an MLDv2 CHANGE_TO_INCLUDE with no sources) for a
    /// configured IPv6 group from the MAC of a registered backend: the
    /// backend is removed (without a key) or its leave held for lb-user's
    /// confirmation query (with a key), passed on.
    MldLeave = "mld_leave" => Pass,
    /// MLD leave for a configured IPv6 group that names no registered
    /// backend (no IPv6 backend announced from its MAC, or the leave map
    /// is full): nothing removed, passed on.
    MldLeaveUntied = "mld_leave_untied" => Pass,
    /// Routed membership report for a configured group (protocol §4.4), counted
    /// for its liveness.
    RoutedReport = "routed_report" => Drop,
    /// Routed message to a group's port dropped: not a whole v1 report for
    /// that group, or (with a key) a tag that verifies under no key or a
    /// sequence outside the clock skew.
    RoutedRefused = "routed_refused" => Drop,
    /// Truncated or inconsistent Ethernet, IPv4, UDP or IGMP header: left
    /// to the kernel, which drops it; nothing is registered from it.
    Malformed = "malformed" => Pass,
    /// Not for us: passed untouched.
    Ignored = "ignored" => Pass,
    /// Client packet of a known flow sent to its backend.
    VipForwarded = "vip_forwarded" => Tx,
    /// Client packet that started a new flow (Maglev pick), sent to its backend.
    VipNewFlow = "vip_new_flow" => Tx,
    /// Client packet wrapped in IP-in-IP (of the backend's family) and sent
    /// toward its backend (known flow).
    IpipForwarded = "ipip_forwarded" => Tx,
    /// Client packet that started a new flow, wrapped in IP-in-IP and sent.
    IpipNewFlow = "ipip_new_flow" => Tx,
    /// Client packet for an IP-in-IP backend longer than the interface's MTU
    /// (a GSO super-packet, which generic XDP sees whole): passed with its
    /// backend and next hop in its CPU's `GSO_HANDOFFS` slot to the GSO program, which
    /// wraps it ([`GsoCounter`] counts what became of it).
    IpipGsoHandoff = "ipip_gso_handoff" => Pass,
    /// Client packet dropped: the kernel's FIB has no usable next hop toward
    /// its IP-in-IP backend (recorded in NEXT_HOP_ERRORS or
    /// NEXT_HOP_ERRORS6 for lb-user to report and resolve).
    IpipNoNextHop = "ipip_no_next_hop" => Drop,
    /// Client packet too big once wrapped, IPv6 or IPv4 with DF set:
    /// answered with an ICMPv6 Packet Too Big or an ICMP "fragmentation
    /// needed" carrying the usable MTU.
    IpipTooBig = "ipip_too_big" => Tx,
    /// IPv4 client packet too big once wrapped, with DF clear: dropped
    /// (XDP cannot fragment).
    IpipTooBigDropped = "ipip_too_big_dropped" => Drop,
    /// Client packet dropped: the frame could not be grown or cut (no headroom).
    IpipNoRoom = "ipip_no_room" => Drop,
    /// Client packet dropped: the service has no registered backend.
    VipNoBackend = "vip_no_backend" => Drop,
    /// Client packet to a VIP service dropped: fragment, IP options or a
    /// truncated TCP or UDP header.
    VipMalformed = "vip_malformed" => Drop,
    /// IPv6 client packet to a VIP dropped: it carries extension headers
    /// (a fragment header among them), which no VIP's service takes
    /// (protocol §9).
    VipExtensionHeaders = "vip_extension_headers" => Drop,
    /// A TCP packet past its SYN of a flow this LB has no entry for, whose
    /// backend in the service's previous table is not its pick: sent to the
    /// pick wrapped twice, the inner header naming the previous backend,
    /// which gets it when the pick holds no such connection (second chance,
    /// protocol §7).
    VipSecondChance = "vip_second_chance" => Tx,
    }
}

/// What a tc program does with a packet: the action it returns
/// (`TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAction {
    Pass = 0,
    Drop = 2,
    Redirect = 7,
}

counters! {
    /// What the LB's GSO program did with a packet on the interface's
    /// ingress (only where XDP runs in generic mode).
    GsoCounter => TcAction {
    /// A super-packet XDP handed over: wrapped in IP-in-IP (the GSO size
    /// lowered by the outer header, so that each segment fits the MTU)
    /// and sent out of the interface toward its next hop.
    Wrapped = "gso_wrapped" => Redirect,
    /// A super-packet XDP handed over that could not be grown or
    /// rewritten (`bpf_skb_adjust_room` refused it): dropped.
    CannotWrap = "gso_cannot_wrap" => Drop,
    /// Any other packet: left to the stack.
    NotHandedOver = "gso_not_handed_over" => Pass,
    }
}

counters! {
    /// Why the agent's decapsulation program did what it did with a packet.
    DecapCounter => TcAction {
    /// IP-in-IP (any family mix: protocol 4 or 41 in IPv4, next header 4
    /// or 41 in IPv6) from a known LB to this backend: outer header
    /// stripped, the client's packet passed up.
    Decapsulated = "decapsulated" => Pass,
    /// IP-in-IP to this backend from a source that is no LB it learned:
    /// dropped, never seen by the stack.
    UnknownSource = "unknown_source" => Drop,
    /// IP-in-IP to another address: left alone.
    NotForUs = "not_for_us" => Pass,
    /// IP-in-IP to this backend that cannot be stripped (a fragment, IP
    /// options on the outer IPv4 header, no whole inner header of the
    /// family the outer one names): dropped.
    Malformed = "malformed" => Drop,
    /// Not IP-in-IP: left alone.
    NotIpip = "not_ipip" => Pass,
    /// A second-chance packet (IP-in-IP from a known LB holding IP-in-IP
    /// from the same LB to the backend it names next, protocol §7) whose connection
    /// this backend holds (or that opens one, or is not TCP): both outer
    /// headers stripped, the client's packet passed up.
    SecondChanceKept = "second_chance_kept" => Pass,
    /// A second-chance TCP packet with no socket here: the first outer
    /// header stripped and the rest (IP-in-IP from the LB to the backend
    /// it names) sent back out toward that backend, which takes it as any
    /// IP-in-IP from the LB; never handed on twice.
    SecondChanceHandedOn = "second_chance_handed_on" => Redirect,
    /// A second-chance packet whose inner header is not from the same LB,
    /// names this backend itself, or cannot be read whole: dropped.
    SecondChanceRefused = "second_chance_refused" => Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_fill_their_slots_in_order_with_unique_names() {
        for (slot, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, slot, "{}", counter.name());
        }
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len(), "duplicate counter name");
    }
}
