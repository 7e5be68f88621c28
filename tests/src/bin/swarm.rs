//! Plays COUNT backends from one network namespace, for the scale tests
//! and benchmarks: members FIRST_ADDR, FIRST_ADDR + 1, ... answer every LB
//! query exactly as backend-agent does (protocol §4, §5): one membership report
//! per query round, after a random delay and cancelled by any report heard
//! first (IGMP, or routed when the query was routed), and one v1
//! announcement per member to the LB, tagged with the key if one is given.
//! The announcements leave through a raw socket with each member's source
//! address. SIGTERM sends every member's LEAVING, like agents that stop.
//! With `--churn N`, from the fourth query round on, the N oldest members
//! leave (LEAVING) and N new ones join (the addresses after the last) in
//! every round, as a fleet that deploys and autoscales.
//! Usage: swarm IFACE FIRST_ADDR COUNT [KEY_FILE] [--churn N]
//! Prints one JSON line per query round answered: when the query came
//! (Unix ns), how many announcements went out and in how long, and how
//! many members left and joined.
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, OwnedFd},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_common::wire::{
    AnnouncementV1, FLAG_LEAVING, IGMP_V2_REPORT, IgmpMessage, Routed, igmp_v2_message,
    internet_checksum,
};
use lb_host::{
    cli::read_key_file,
    igmp_socket::IgmpSocket,
    routed_socket::RoutedSocket,
    system::{interface_index, interface_ipv4, realtime_ns},
};
use lb_tests::raw;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 0, 1);
const PORT: u16 = 2000;
const WEIGHT: u16 = 100;
/// Source port of every member's announcements.
const SOURCE_PORT: u16 = 40000;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The members and how they speak.
struct Swarm {
    first: u32,
    count: u32,
    /// Members that have left (churn): the current ones are `base..base + count`.
    base: u32,
    /// Members that leave and join per round, from round `CHURN_FROM`.
    churn: u32,
    rounds: u32,
    key: Option<[u8; 16]>,
    own: Ipv4Addr,
    raw: OwnedFd,
    igmp: IgmpSocket,
    routed: RoutedSocket,
    /// Last sequence sent: strictly increasing for every member.
    sequence: u64,
    /// The pending report of this round: when, and whether routed.
    report_at: Option<(Instant, bool)>,
    /// Last LB that queried, for LEAVING.
    lb: Option<Ipv4Addr>,
}

/// The query round from which members churn: the first ones register
/// the swarm whole.
const CHURN_FROM: u32 = 3;

impl Swarm {
    fn member(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.first.wrapping_add(i))
    }

    /// One v1 announcement from every current member to `lb`; returns how
    /// many went out (a full socket buffer drops one, as a lossy network
    /// would).
    fn announce_all(&mut self, lb: Ipv4Addr, flags: u8) -> u32 {
        self.announce(self.base..self.base + self.count, lb, flags)
    }

    /// One v1 announcement from each of the `members` to `lb`.
    fn announce(&mut self, members: std::ops::Range<u32>, lb: Ipv4Addr, flags: u8) -> u32 {
        self.sequence = realtime_ns().max(self.sequence + 1);
        let mut packet = [0u8; 20 + 8 + 24];
        let mut sent = 0;
        for i in members {
            let src = self.member(i);
            let announcement = AnnouncementV1 {
                flags,
                weight: WEIGHT,
                sequence: self.sequence,
                tag: 0,
            };
            let payload = match &self.key {
                Some(key) => announcement.encode_tagged(key, src.octets(), lb.octets()),
                None => announcement.encode(),
            };
            udp_packet(&mut packet, src, lb, &payload);
            if raw::send(&self.raw, &packet, lb).is_ok() {
                sent += 1;
            }
        }
        sent
    }

    /// The round's report: IGMP on the segment, routed too if asked.
    fn report(&mut self, routed: bool) {
        let report = igmp_v2_message(IGMP_V2_REPORT, 0, GROUP.octets());
        let _ = self.igmp.send(&report, GROUP);
        if routed {
            self.sequence = realtime_ns().max(self.sequence + 1);
            let message = Routed::Report {
                group: GROUP.octets(),
                sequence: self.sequence,
            };
            let payload = message.encode(self.own.octets(), self.key.as_ref());
            let _ = self.routed.send(&payload, GROUP.into(), PORT);
        }
    }

    /// A query from `lb` with this max response time: the report is
    /// scheduled, the announcements go out at once.
    fn on_query(&mut self, lb: Ipv4Addr, max_resp: Duration, routed: bool) {
        let delay = max_resp.mul_f64(random_fraction());
        let at = Instant::now() + delay;
        self.report_at = Some(match self.report_at {
            Some((t, r)) => (t.min(at), r || routed),
            None => (at, routed),
        });
        let (start, query_unix_ns) = (Instant::now(), realtime_ns());
        self.rounds += 1;
        let churn = if self.rounds > CHURN_FROM {
            self.churn
        } else {
            0
        };
        // The oldest leave; the window's end brings as many new ones.
        self.announce(self.base..self.base + churn, lb, FLAG_LEAVING);
        self.base += churn;
        let sent = self.announce_all(lb, 0);
        self.lb = Some(lb);
        println!(
            "{{\"lb\":\"{lb}\",\"routed\":{routed},\"query_unix_ns\":{query_unix_ns},\"announced\":{sent},\"left\":{churn},\"joined\":{churn},\"ms\":{}}}",
            start.elapsed().as_millis()
        );
    }

    fn receive(&mut self) {
        while let Ok(Some(received)) = self.igmp.try_recv() {
            match received.message {
                IgmpMessage::Query {
                    max_resp_tenths,
                    group_field,
                } if received.destination == GROUP => {
                    let lb = Ipv4Addr::from(group_field);
                    if !lb.is_multicast() && !lb.is_unspecified() {
                        let max_resp = Duration::from_millis(u64::from(max_resp_tenths) * 100);
                        self.on_query(lb, max_resp, false);
                    }
                }
                IgmpMessage::Report { group } if Ipv4Addr::from(group) == GROUP => {
                    self.report_at = None;
                }
                _ => {}
            }
        }
        while let Ok(received) = self.routed.try_recv() {
            let std::net::IpAddr::V4(source) = received.source else {
                continue;
            };
            match Routed::parse(&received.payload, source.octets(), self.key.as_ref()) {
                Some(Routed::Query {
                    lb, max_resp_ms, ..
                }) => {
                    let max_resp = Duration::from_millis(u64::from(max_resp_ms));
                    self.on_query(Ipv4Addr::from(lb), max_resp, true);
                }
                Some(Routed::Report { group, .. }) if Ipv4Addr::from(group) == GROUP => {
                    self.report_at = None;
                }
                _ => {}
            }
        }
    }
}

/// An IPv4 + UDP datagram from `src`:SOURCE_PORT to `dst`:PORT (the UDP
/// checksum left 0, as IPv4 allows).
fn udp_packet(packet: &mut [u8; 52], src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8; 24]) {
    packet[..20].copy_from_slice(&[
        0x45, 0, 0, 52, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet[20..22].copy_from_slice(&SOURCE_PORT.to_be_bytes());
    packet[22..24].copy_from_slice(&PORT.to_be_bytes());
    packet[24..26].copy_from_slice(&32u16.to_be_bytes());
    packet[26..28].copy_from_slice(&[0, 0]);
    packet[28..].copy_from_slice(payload);
}

/// A number in [0, 1) from the clock's low bits: enough to spread reports.
fn random_fraction() -> f64 {
    f64::from((realtime_ns() % 1_000_003) as u32) / 1_000_003.0
}

/// Waits (at most `limit`) until one of the sockets is readable.
fn wait_readable(fds: [i32; 2], limit: Duration) {
    let mut polls = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `polls` is a valid array of two pollfd for the call.
    unsafe { libc::poll(polls.as_mut_ptr(), 2, ms) };
}

fn start(args: &[String]) -> Result<Swarm, String> {
    let mut args = args.to_vec();
    let churn = match args.iter().position(|a| a == "--churn") {
        Some(at) => {
            let value = args.get(at + 1).ok_or("--churn needs a count")?.clone();
            args.drain(at..at + 2);
            value.parse().map_err(|e| format!("--churn: {e}"))?
        }
        None => 0,
    };
    let (iface, first, count, key) = match args.as_slice() {
        [iface, first, count] => (iface, first, count, None),
        [iface, first, count, key] => (iface, first, count, Some(key)),
        _ => return Err("usage: swarm IFACE FIRST_ADDR COUNT [KEY_FILE] [--churn N]".into()),
    };
    let first: Ipv4Addr = first.parse().map_err(|e| format!("FIRST_ADDR: {e}"))?;
    let count: u32 = count.parse().map_err(|e| format!("COUNT: {e}"))?;
    let key = key
        .map(|k| read_key_file(std::path::Path::new(k)))
        .transpose()?;
    let ifindex = interface_index(iface).map_err(|e| e.to_string())?;
    let own = interface_ipv4(iface).map_err(|e| e.to_string())?;
    let igmp = IgmpSocket::open(iface, ifindex, 1).map_err(|e| format!("IGMP socket: {e}"))?;
    igmp.join(GROUP)
        .map_err(|e| format!("joining {GROUP}: {e}"))?;
    let routed = RoutedSocket::member(GROUP.into(), PORT, ifindex, 16)
        .map_err(|e| format!("routed socket: {e}"))?;
    let raw = raw::socket().map_err(|e| format!("raw socket: {e}"))?;
    Ok(Swarm {
        first: u32::from(first),
        count,
        base: 0,
        churn,
        rounds: 0,
        key,
        own,
        raw,
        igmp,
        routed,
        sequence: 0,
        report_at: None,
        lb: None,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut swarm = match start(&args) {
        Ok(swarm) => swarm,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
    // Like an agent's start: a first report, routed too.
    swarm.report(true);
    let fds = [swarm.igmp.as_raw_fd(), swarm.routed.as_raw_fd()];
    while !STOP.load(Ordering::Relaxed) {
        let until_report = swarm
            .report_at
            .map_or(Duration::from_millis(100), |(t, _)| {
                t.saturating_duration_since(Instant::now())
            });
        wait_readable(fds, until_report.min(Duration::from_millis(100)));
        swarm.receive();
        if let Some((at, routed)) = swarm.report_at
            && at <= Instant::now()
        {
            swarm.report_at = None;
            swarm.report(routed);
        }
    }
    if let Some(lb) = swarm.lb {
        let sent = swarm.announce_all(lb, FLAG_LEAVING);
        println!("{{\"leaving\":{sent}}}");
    }
    ExitCode::SUCCESS
}
