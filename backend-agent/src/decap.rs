//! IPIP decapsulation on the backend (protocol §7): the agent attaches the
//! `agent_decap` tc program (lb-ebpf's `bin/agent-decap.rs`) to its
//! interface's ingress through a TCX link, tells it the LBs it learns from
//! queries and its own address, and reads its counters. The link belongs
//! to this process: the kernel detaches the program when the agent exits,
//! even after SIGKILL, so a restarted agent never finds one left over.
//! Only a restart that keeps state (SIGQUIT) pins the link, so that IPIP
//! is still stripped while no agent runs; the next agent swaps its own
//! program into that link at once (BPF_LINK_UPDATE) and unpins it.
use std::{io, net::IpAddr, path::Path};

use anyhow::Context;
use std::os::fd::AsFd;

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap, Map, MapData, PerCpuArray},
    programs::{
        LinkOrder, SchedClassifier, TcAttach, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLinkId,
    },
    sys::SyscallError,
};
use lb_common::{DECAP_PROGRAM_NAME, DecapCounter};

static DECAP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-decap.o"));

/// Typed handles of the maps of `lb_common::decap_maps!`.
macro_rules! decap_handles {
    ($( $(#[$doc:meta])* $name:ident / $field:ident : $kind:ident <$($ty:ty),+> [$cap:expr]; )*) => {
        struct DecapMaps {
            $( $field: decap_handles!(@handle $kind <$($ty),+>), )*
        }

        impl DecapMaps {
            fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
                Ok(Self {
                    $(
                        $field: ebpf
                            .take_map(stringify!($name))
                            .with_context(|| format!("the decapsulation object has no map {}", stringify!($name)))?
                            .try_into()
                            .with_context(|| format!("map {} of the decapsulation object", stringify!($name)))?,
                    )*
                })
            }
        }
    };
    (@handle HashMap <$k:ty, $v:ty>) => { HashMap<MapData, $k, $v> };
    (@handle Array <$v:ty>) => { Array<MapData, $v> };
    (@handle PerCpuArray <$v:ty>) => { PerCpuArray<MapData, $v> };
}
lb_common::decap_maps!(decap_handles);

/// The attached program and its maps.
pub struct Decap {
    // Holds the program and its TCX link: dropping it detaches.
    ebpf: Ebpf,
    maps: DecapMaps,
    /// The TCX link, once attached.
    link: Option<SchedClassifierLinkId>,
}

impl Decap {
    /// Loads the program and attaches it to `iface`'s ingress, accepting
    /// IP-in-IP to `local` (from no LB yet). A link that a predecessor kept at
    /// `kept_link` gets this program in place of its own, at once.
    pub fn attach(iface: &str, local: IpAddr, kept_link: &Path) -> anyhow::Result<Self> {
        let mut decap = Self::load(local)?;
        let program = decap.program()?;
        let link = match PinnedLink::from_pin(kept_link) {
            Ok(kept) => {
                let link = FdLink::from(kept)
                    .try_into()
                    .context("the kept decapsulation link is not a tc link")?;
                let id = program
                    .attach_to_link(link)
                    .context("putting the decapsulation program into the kept link")?;
                std::fs::remove_file(kept_link)
                    .with_context(|| format!("unpinning {}", kept_link.display()))?;
                id
            }
            Err(LinkError::SyscallError(SyscallError { io_error, .. }))
                if io_error.kind() == io::ErrorKind::NotFound =>
            {
                let attach = TcAttach::Tcx {
                    attach_type: TcAttachType::Ingress,
                    order: LinkOrder::default(),
                };
                let ifindex = lb_host::system::interface_index(iface)?;
                program.attach(ifindex, attach).with_context(|| {
                    format!("attaching the decapsulation program to {iface}'s ingress (TCX needs Linux 6.6 or later)")
                })?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("opening {}", kept_link.display()));
            }
        };
        decap.link = Some(link);
        Ok(decap)
    }

    /// Pins the link at `path` so that the program stays attached after
    /// this process exits (for the next agent to take over).
    pub fn keep(mut self, path: &Path) -> anyhow::Result<()> {
        let id = self
            .link
            .take()
            .context("the decapsulation program is not attached")?;
        let link: FdLink = self
            .program()?
            .take_link(id)
            .context("taking the decapsulation link")?
            .try_into()
            .context("the decapsulation link is not a TCX link")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} (is bpffs mounted?)", dir.display()))?;
        }
        link.pin(path)
            .with_context(|| format!("pinning the decapsulation link at {}", path.display()))?;
        Ok(())
    }

    /// Loads and verifies the program, not attached.
    fn load(local: IpAddr) -> anyhow::Result<Self> {
        let mut ebpf = Ebpf::load(DECAP_OBJECT).context("loading the decapsulation program")?;
        let maps = DecapMaps::take(&mut ebpf)?;
        let mut decap = Self {
            ebpf,
            maps,
            link: None,
        };
        decap
            .program()?
            .load()
            .context("verifying the decapsulation program")?;
        decap.set_local(local)?;
        Ok(decap)
    }

    fn program(&mut self) -> anyhow::Result<&mut SchedClassifier> {
        self.ebpf
            .program_mut(DECAP_PROGRAM_NAME)
            .context("the decapsulation object has no program")?
            .try_into()
            .context("the decapsulation program is not a tc classifier")
    }

    /// IP-in-IP from `lb` is stripped from now on.
    pub fn learn_lb(&mut self, lb: IpAddr) -> anyhow::Result<()> {
        match lb {
            IpAddr::V4(lb) => self.maps.lbs.insert(&lb.octets(), &1, 0),
            IpAddr::V6(lb) => self.maps.lbs6.insert(&lb.octets(), &1, 0),
        }
        .with_context(|| format!("adding LB {lb} to the decapsulation program"))
    }

    /// Only IP-in-IP to `local` is stripped (of its family: the other's
    /// address is left as it was).
    pub fn set_local(&mut self, local: IpAddr) -> anyhow::Result<()> {
        match local {
            IpAddr::V4(local) => self.maps.local.set(0, &local.octets(), 0),
            IpAddr::V6(local) => self.maps.local6.set(0, &local.octets(), 0),
        }
        .context("setting the address the decapsulation program accepts")
    }

    /// Every counter, summed over CPUs, by name.
    pub fn counters(&self) -> anyhow::Result<Vec<(&'static str, u64)>> {
        read_counters(&self.maps.counters)
    }

    /// A handle on the counters for another thread (the metrics endpoint).
    pub fn counters_handle(&self) -> anyhow::Result<DecapCounters> {
        let fd = self
            .maps
            .counters
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the decapsulation counters' fd")?;
        let map = MapData::from_fd(fd).context("opening the decapsulation counters")?;
        Ok(DecapCounters(
            Map::PerCpuArray(map)
                .try_into()
                .context("the decapsulation counters")?,
        ))
    }
}

/// The decapsulation counters, readable from any thread.
pub struct DecapCounters(PerCpuArray<MapData, u64>);

impl DecapCounters {
    /// Every counter, summed over CPUs, by name.
    pub fn read(&self) -> anyhow::Result<Vec<(&'static str, u64)>> {
        read_counters(&self.0)
    }
}

fn read_counters(map: &PerCpuArray<MapData, u64>) -> anyhow::Result<Vec<(&'static str, u64)>> {
    DecapCounter::ALL
        .iter()
        .map(|&c| {
            let per_cpu = map
                .get(&(c as u32), 0)
                .context("reading the decapsulation counters")?;
            Ok((c.name(), per_cpu.iter().sum()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The program through BPF_PROG_TEST_RUN, as a table: input frame,
    //! tc action, counter, whole output frame. Needs root.
    use std::net::{Ipv4Addr, Ipv6Addr};

    use aya::programs::{TestRun, TestRunOptions};
    use lb_common::wire::internet_checksum;

    use super::*;

    const LB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const TC_ACT_OK: i32 = 0;
    const TC_ACT_SHOT: i32 = 2;
    const TC_ACT_REDIRECT: i32 = 7;
    /// Another backend of the group, which a second chance names.
    const NEXT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

    fn ipv4(proto: u8, frags: u16, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&frags.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        let sum = internet_checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn frame(ether_type: u16, packet: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 0xfe];
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(packet);
        f
    }

    /// The client's TCP SYN to the VIP, as the LB wrapped it.
    fn client_packet() -> Vec<u8> {
        client_segment(0x02)
    }

    /// A client TCP segment with `flags` to the VIP (no socket here has it).
    fn client_segment(flags: u8) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[..4].copy_from_slice(&[0x03, 0xe8, 0, 80]);
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        ipv4(6, 0x4000, CLIENT, VIP, &tcp)
    }

    fn ipip(src: Ipv4Addr, dst: Ipv4Addr, frags: u16, inner: &[u8]) -> Vec<u8> {
        frame(0x0800, &ipv4(4, frags, src, dst, inner))
    }

    #[test]
    fn strips_ipip_only_from_a_learned_lb_to_this_backend() {
        lb_host::system::require_root("the decapsulation tests")
            .expect("run the decapsulation tests as root");
        let mut decap = Decap::load(LOCAL.into()).unwrap();
        decap.learn_lb(LB.into()).unwrap();
        let inner = client_packet();
        let from_lb = ipip(LB, LOCAL, 0x4000, &inner);
        let plain = frame(0x0800, &inner);
        let arp = frame(0x0806, &[0; 28]);
        // Second chances: IPIP from the LB to here holding IPIP from the
        // same LB to the next backend.
        let twice = |middle_src, next, client: &[u8]| {
            ipip(
                LB,
                LOCAL,
                0x4000,
                &ipv4(4, 0x4000, middle_src, next, client),
            )
        };
        let ack = client_segment(0x10);
        let cases = vec![
            (
                "a second chance for a connection no socket here holds: handed on",
                twice(LB, NEXT, &ack),
                TC_ACT_REDIRECT,
                DecapCounter::SecondChanceHandedOn,
                frame(0x0800, &ipv4(4, 0x4000, LB, NEXT, &ack)),
            ),
            (
                "a second chance for a SYN: kept, both headers stripped",
                twice(LB, NEXT, &inner),
                TC_ACT_OK,
                DecapCounter::SecondChanceKept,
                plain.clone(),
            ),
            (
                "a second chance naming the next backend from another source",
                twice(CLIENT, NEXT, &ack),
                TC_ACT_SHOT,
                DecapCounter::SecondChanceRefused,
                twice(CLIENT, NEXT, &ack),
            ),
            (
                "a second chance naming this backend: a loop",
                twice(LB, LOCAL, &ack),
                TC_ACT_SHOT,
                DecapCounter::SecondChanceRefused,
                twice(LB, LOCAL, &ack),
            ),
            (
                "IPIP from a learned LB",
                from_lb.clone(),
                TC_ACT_OK,
                DecapCounter::Decapsulated,
                plain.clone(),
            ),
            (
                "IPIP from a stranger",
                ipip(CLIENT, LOCAL, 0, &inner),
                TC_ACT_SHOT,
                DecapCounter::UnknownSource,
                ipip(CLIENT, LOCAL, 0, &inner),
            ),
            (
                "IPIP to another address",
                ipip(LB, VIP, 0, &inner),
                TC_ACT_OK,
                DecapCounter::NotForUs,
                ipip(LB, VIP, 0, &inner),
            ),
            (
                "an IPIP fragment",
                ipip(LB, LOCAL, 0x2000, &inner),
                TC_ACT_SHOT,
                DecapCounter::Malformed,
                ipip(LB, LOCAL, 0x2000, &inner),
            ),
            (
                "IPIP without a whole inner header",
                ipip(LB, LOCAL, 0, &inner[..12]),
                TC_ACT_SHOT,
                DecapCounter::Malformed,
                ipip(LB, LOCAL, 0, &inner[..12]),
            ),
            (
                "IPIP whose inner packet is not IPv4",
                ipip(LB, LOCAL, 0, &[0x60; 40]),
                TC_ACT_SHOT,
                DecapCounter::Malformed,
                ipip(LB, LOCAL, 0, &[0x60; 40]),
            ),
            (
                "plain IPv4",
                plain.clone(),
                TC_ACT_OK,
                DecapCounter::NotIpip,
                plain.clone(),
            ),
            ("ARP", arp.clone(), TC_ACT_OK, DecapCounter::NotIpip, arp),
        ];
        run_cases(&mut decap, cases);
    }

    const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64);
    /// Another IPv6 backend of the group, which a second chance names.
    const NEXT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);

    fn ipv6(next: u8, src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(payload);
        h
    }

    /// An IPv6 client's TCP SYN to the IPv6 VIP.
    fn client_packet6() -> Vec<u8> {
        client_segment6(0x02)
    }

    /// An IPv6 client's TCP segment with `flags` to the IPv6 VIP (no
    /// socket here has it).
    fn client_segment6(flags: u8) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[..4].copy_from_slice(&[0x03, 0xe8, 0, 80]);
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        ipv6(6, CLIENT6, VIP6, &tcp)
    }

    /// Protocol §9: an agent of an IPv6 group strips an IPv6 outer header
    /// (next header 41 or 4), one of an IPv4 group also an IPv4 outer
    /// header of protocol 41; where the family changes, the frame says the
    /// inner one.
    #[test]
    fn strips_every_family_mix_only_from_a_learned_lb_to_this_backend() {
        lb_host::system::require_root("the decapsulation tests")
            .expect("run the decapsulation tests as root");
        let mut decap = Decap::load(LOCAL6.into()).unwrap();
        decap.set_local(LOCAL.into()).unwrap();
        decap.learn_lb(LB6.into()).unwrap();
        decap.learn_lb(LB.into()).unwrap();
        let (inner4, inner6) = (client_packet(), client_packet6());
        let ack6 = client_segment6(0x10);
        let in_ipv6 = |src, dst, inner: &[u8]| {
            let next = if inner[0] >> 4 == 4 { 4 } else { 41 };
            frame(0x86dd, &ipv6(next, src, dst, inner))
        };
        let cases = vec![
            (
                "IPv6 in IPv6 from a learned LB",
                in_ipv6(LB6, LOCAL6, &inner6),
                TC_ACT_OK,
                DecapCounter::Decapsulated,
                frame(0x86dd, &inner6),
            ),
            (
                "IPv4 in IPv6 from a learned LB: the frame turns IPv4",
                in_ipv6(LB6, LOCAL6, &inner4),
                TC_ACT_OK,
                DecapCounter::Decapsulated,
                frame(0x0800, &inner4),
            ),
            (
                "IPv6 in IPv4 (protocol 41) from a learned LB: the frame turns IPv6",
                frame(0x0800, &ipv4(41, 0x4000, LB, LOCAL, &inner6)),
                TC_ACT_OK,
                DecapCounter::Decapsulated,
                frame(0x86dd, &inner6),
            ),
            (
                "IPv6 in IPv6 from a stranger",
                in_ipv6(CLIENT6, LOCAL6, &inner6),
                TC_ACT_SHOT,
                DecapCounter::UnknownSource,
                in_ipv6(CLIENT6, LOCAL6, &inner6),
            ),
            (
                "IPv6 in IPv6 to another address",
                in_ipv6(LB6, VIP6, &inner6),
                TC_ACT_OK,
                DecapCounter::NotForUs,
                in_ipv6(LB6, VIP6, &inner6),
            ),
            (
                "next header 41 over an IPv4 packet",
                frame(0x86dd, &ipv6(41, LB6, LOCAL6, &inner4)),
                TC_ACT_SHOT,
                DecapCounter::Malformed,
                frame(0x86dd, &ipv6(41, LB6, LOCAL6, &inner4)),
            ),
            (
                "protocol 41 over an IPv4 packet",
                frame(0x0800, &ipv4(41, 0x4000, LB, LOCAL, &inner4)),
                TC_ACT_SHOT,
                DecapCounter::Malformed,
                frame(0x0800, &ipv4(41, 0x4000, LB, LOCAL, &inner4)),
            ),
            (
                "an IPv6 second chance for a connection no socket here holds: handed on",
                in_ipv6(LB6, LOCAL6, &ipv6(41, LB6, NEXT6, &ack6)),
                TC_ACT_REDIRECT,
                DecapCounter::SecondChanceHandedOn,
                frame(0x86dd, &ipv6(41, LB6, NEXT6, &ack6)),
            ),
            (
                "an IPv6 second chance for a SYN: kept, both headers stripped",
                in_ipv6(LB6, LOCAL6, &ipv6(41, LB6, NEXT6, &inner6)),
                TC_ACT_OK,
                DecapCounter::SecondChanceKept,
                frame(0x86dd, &inner6),
            ),
            (
                "an IPv4 client's second chance in IPv6: kept, the frame turns IPv4",
                in_ipv6(LB6, LOCAL6, &ipv6(4, LB6, NEXT6, &inner4)),
                TC_ACT_OK,
                DecapCounter::SecondChanceKept,
                frame(0x0800, &inner4),
            ),
            (
                "an IPv6 client's second chance in IPv4: kept, the frame turns IPv6",
                frame(
                    0x0800,
                    &ipv4(4, 0x4000, LB, LOCAL, &ipv4(41, 0x4000, LB, NEXT, &inner6)),
                ),
                TC_ACT_OK,
                DecapCounter::SecondChanceKept,
                frame(0x86dd, &inner6),
            ),
            (
                "an IPv6 second chance naming the next backend from another source",
                in_ipv6(LB6, LOCAL6, &ipv6(41, CLIENT6, NEXT6, &ack6)),
                TC_ACT_SHOT,
                DecapCounter::SecondChanceRefused,
                in_ipv6(LB6, LOCAL6, &ipv6(41, CLIENT6, NEXT6, &ack6)),
            ),
            (
                "plain IPv6",
                frame(0x86dd, &inner6),
                TC_ACT_OK,
                DecapCounter::NotIpip,
                frame(0x86dd, &inner6),
            ),
        ];
        run_cases(&mut decap, cases);
    }

    /// A case: name, input frame, tc action, counter moved, output frame.
    type Case = (&'static str, Vec<u8>, i32, DecapCounter, Vec<u8>);

    fn run_cases(decap: &mut Decap, cases: Vec<Case>) {
        for (name, input, action, counter, expected) in cases {
            let before = decap.counters().unwrap();
            let mut out = vec![0u8; input.len() + 64];
            let result = decap
                .program()
                .unwrap()
                .test_run(TestRunOptions {
                    data_in: Some(&input),
                    data_out: Some(&mut out),
                    ..TestRunOptions::default()
                })
                .unwrap();
            out.truncate(result.data_size_out as usize);
            assert_eq!(result.return_value as i32, action, "{name}: action");
            assert_eq!(out, expected, "{name}: output frame");
            let after = decap.counters().unwrap();
            for ((n, b), (_, a)) in before.iter().zip(&after) {
                let moved = u64::from(*n == counter.name());
                assert_eq!(*a, b + moved, "{name}: counter {n}");
            }
        }
    }
}
