//! Routed topologies (protocol §4.4, §7; docs/testing.md): subnets behind routers, and the
//! multicast routers that replicate the group's UDP between them. Where
//! the kernel routes multicast (`CONFIG_IP_MROUTE`), smcroute drives it;
//! where it does not (docs/testing.md), nftables' netdev `dup` replicates the
//! group's UDP the way a multicast router does: the TTL decremented, TTL 1
//! and IGMP never forwarded.
use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{Proc, Topology, sh, wait_for};

impl Topology {
    /// The second octet of every address of this topology.
    fn net(&self) -> u8 {
        self.hosts[0].addr.octets()[1]
    }

    /// Runs `sysctl -w key=value` in host `i`.
    pub fn sysctl(&self, i: usize, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec_program(i, "sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Adds subnet `10.<net>.<id>.0/24` behind host `router`: the router
    /// gets `10.<net>.<id>.254` on a new bridge `s<id>` and forwards; `hosts`
    /// new hosts get `.1..=hosts` on their `eth0`, with a default route
    /// through the router. Returns the new hosts' indices.
    pub fn add_subnet(&mut self, router: usize, id: u8, hosts: u8) -> anyhow::Result<Vec<usize>> {
        let net = self.net();
        let router_ns = self.hosts[router].netns.clone();
        let bridge = format!("s{id}");
        let gateway = Ipv4Addr::new(10, net, id, 254);
        // A router in front of direct server return sees the backends'
        // answers come from the VIP, which it routes elsewhere: no reverse
        // path filter there (the backends keep theirs).
        for key in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.eth0.rp_filter=0",
        ] {
            sh("ip", &["netns", "exec", &router_ns, "sysctl", "-qw", key])?;
        }
        sh(
            "ip",
            &[
                "-n",
                &router_ns,
                "link",
                "add",
                &bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )?;
        sh(
            "ip",
            &[
                "-n",
                &router_ns,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                &bridge,
            ],
        )?;
        sh("ip", &["-n", &router_ns, "link", "set", &bridge, "up"])?;
        let mut added = Vec::new();
        for i in 1..=hosts {
            let netns = format!("{}-s{id}h{i}", self.prefix);
            let addr = Ipv4Addr::new(10, net, id, i);
            let host = self.add_host(netns, (&router_ns, &bridge, &format!("s{id}p{i}")), addr)?;
            let via = gateway.to_string();
            let netns = &self.hosts[host].netns;
            sh("ip", &["-n", netns, "route", "add", "default", "via", &via])?;
            added.push(host);
        }
        Ok(added)
    }

    /// Gives subnet `id` behind `router` (see `add_subnet`) IPv6 as well:
    /// 2001:db8:`net`:`id`::/64, the router at `::fe` forwarding IPv6, each
    /// of `hosts` at `::k` (k from 1, in order, with link-local fe80::k)
    /// routing everything through it, none waiting for duplicate address
    /// detection. Returns the hosts' addresses.
    pub fn ipv6_subnet(
        &self,
        router: usize,
        id: u8,
        hosts: &[usize],
    ) -> anyhow::Result<Vec<Ipv6Addr>> {
        let net = u16::from(self.net());
        let address = |k: u16| Ipv6Addr::new(0x2001, 0xdb8, net, u16::from(id), 0, 0, 0, k);
        let bridge = format!("s{id}");
        self.sysctl(router, "net.ipv6.conf.all.forwarding", "1")?;
        self.sysctl(router, &format!("net.ipv6.conf.{bridge}.accept_dad"), "0")?;
        let gateway = address(0xfe);
        self.exec_program(
            router,
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{gateway}/64"),
                "dev",
                &bridge,
                "nodad",
            ],
        )?;
        let mut added = Vec::new();
        for (k, &host) in (1u16..).zip(hosts) {
            let addr = address(k);
            self.ipv6_with(host, k, addr)?;
            self.exec_program(
                host,
                "ip",
                &["-6", "route", "add", "default", "via", &gateway.to_string()],
            )?;
            added.push(addr);
        }
        Ok(added)
    }

    /// Hosts `hosts` of the LB's segment route this topology's IPv6
    /// subnets (2001:db8:`net`::/48) through `router`'s segment address.
    pub fn route6_through(&self, router: usize, hosts: &[usize]) -> anyhow::Result<()> {
        let prefix = format!("2001:db8:{:x}::/48", self.net());
        let via = self.ipv6_address(router).to_string();
        for &h in hosts {
            self.exec_program(h, "ip", &["-6", "route", "add", &prefix, "via", &via])?;
        }
        Ok(())
    }

    /// Routes `prefix` from host `i` through `via`.
    pub fn add_route(&self, i: usize, prefix: &str, via: Ipv4Addr) -> anyhow::Result<()> {
        let netns = &self.hosts[i].netns;
        sh(
            "ip",
            &["-n", netns, "route", "add", prefix, "via", &via.to_string()],
        )
        .map(drop)
    }

    /// The address router `router` has on subnet `id` (see `add_subnet`).
    pub fn gateway(&self, id: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net(), id, 254)
    }

    /// All of this topology's subnets, `10.<net>.0.0/16`.
    pub fn all_subnets(&self) -> String {
        format!("10.{}.0.0/16", self.net())
    }

    /// Hosts `hosts` of the LB's segment route every subnet through
    /// `router`. Their offloads stay at their defaults: a sender's TSO and
    /// GSO super-packets reach the LB whole, as behind any veth or GRO.
    pub fn route_through(&self, router: usize, hosts: &[usize]) -> anyhow::Result<()> {
        let via = self.host(router).addr;
        for &h in hosts {
            self.add_route(h, &self.all_subnets(), via)?;
        }
        Ok(())
    }

    /// Makes host `router` a multicast router for `group` between `ifaces`
    /// (each to all the others): a query reaches every subnet, a report
    /// reaches the LB and every other member (suppression). Returns once
    /// it replicates.
    pub fn start_mrouter(
        &self,
        router: usize,
        group: impl Into<IpAddr>,
        ifaces: &[&str],
    ) -> anyhow::Result<Mrouter> {
        let group = group.into();
        let kind = MrouterKind::of_this_kernel(group)?;
        println!("multicast router in host {router}: {}", kind.describe());
        match kind {
            MrouterKind::Smcroute => self.start_smcroute(router, group, ifaces),
            MrouterKind::NftablesDup => self.replicate_with_nftables(router, group, ifaces),
        }
    }

    fn start_smcroute(
        &self,
        router: usize,
        group: IpAddr,
        ifaces: &[&str],
    ) -> anyhow::Result<Mrouter> {
        let name = format!("smcroute{router}");
        let mut conf = String::new();
        for iface in ifaces {
            writeln!(conf, "phyint {iface} enable")?;
        }
        for from in ifaces {
            let to: Vec<&str> = others(ifaces, from).collect();
            writeln!(conf, "mroute from {from} group {group} to {}", to.join(" "))?;
        }
        let file = |ext: &str| self.logs.join(format!("{name}.{ext}"));
        fs::write(file("conf"), conf)?;
        let path = |ext: &str| file(ext).to_string_lossy().into_owned();
        let daemon = self.spawn_program(
            router,
            &name,
            "smcrouted",
            &[
                "-n",
                "-N",
                "-f",
                &path("conf"),
                "-u",
                &path("sock"),
                "-P",
                &path("pid"),
                "-l",
                "info",
            ],
        )?;
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            daemon.log_text().contains("Ready").then_some(())
        })
        .with_context(|| format!("smcrouted did not start: {}", daemon.log_text()))?;
        Ok(Mrouter {
            _daemon: Some(daemon),
        })
    }

    /// Loads the ruleset of [`nftables_replication`] in host `router`; it
    /// goes with the host's namespace.
    fn replicate_with_nftables(
        &self,
        router: usize,
        group: IpAddr,
        ifaces: &[&str],
    ) -> anyhow::Result<Mrouter> {
        let file = self.logs.join(format!("mrouter{router}.nft"));
        fs::write(&file, nftables_replication(group, ifaces))?;
        let path = file.to_str().context("path")?;
        self.exec_program(router, "nft", &["-f", path])
            .context("loading the multicast replication into nftables (it needs the netdev family and its dup statement, CONFIG_NF_DUP_NETDEV)")?;
        Ok(Mrouter { _daemon: None })
    }
}

/// A multicast router started by a test: smcroute's daemon (killed on
/// drop), or nftables rules that go with the router's namespace.
pub struct Mrouter {
    _daemon: Option<Proc>,
}

/// How this kernel can replicate multicast between a router's interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MrouterKind {
    /// The kernel's multicast routing, with static routes from smcroute.
    Smcroute,
    /// nftables' netdev `dup`, one rule per TTL value.
    NftablesDup,
}

/// Set to `nftables` to use the nftables replication on a kernel that
/// routes multicast too (to test it there).
const MROUTER_ENV: &str = "XDP_LB_TEST_MROUTER";

impl MrouterKind {
    /// smcroute where the kernel routes multicast of `group`'s family (it
    /// creates /proc/net/ip_mr_vif, or ip6_mr_vif, then), else nftables.
    pub fn of_this_kernel(group: IpAddr) -> anyhow::Result<Self> {
        match std::env::var(MROUTER_ENV).ok().as_deref() {
            None | Some("") => {}
            Some("nftables") => return Ok(Self::NftablesDup),
            Some("smcroute") => return Ok(Self::Smcroute),
            Some(other) => bail!("{MROUTER_ENV}={other}: use nftables or smcroute"),
        }
        let vifs = if group.is_ipv4() {
            "/proc/net/ip_mr_vif"
        } else {
            "/proc/net/ip6_mr_vif"
        };
        if Path::new(vifs).exists() {
            Ok(Self::Smcroute)
        } else {
            Ok(Self::NftablesDup)
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Smcroute => "smcroute (the kernel routes multicast)",
            Self::NftablesDup => {
                "nftables netdev dup (this kernel has no multicast routing, CONFIG_IP_MROUTE)"
            }
        }
    }
}

fn others<'a>(ifaces: &'a [&'a str], from: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    ifaces.iter().copied().filter(move |i| *i != from)
}

/// An nftables ruleset that replicates UDP to `group` arriving on each of
/// `ifaces` out of all the others, as a multicast router forwards it: the
/// TTL (IPv6: hop limit) decremented (nft has no arithmetic: one rule per
/// value), a TTL of 1 never forwarded, and nothing but UDP (IGMP and MLD
/// stay on their link). A frame a router sends is never seen by its own
/// ingress, and each hop lowers the TTL, so a chain of routers cannot loop.
pub fn nftables_replication(group: impl Into<IpAddr>, ifaces: &[&str]) -> String {
    let group = group.into();
    let (family, ttl_field) = match group {
        IpAddr::V4(_) => ("ip", "ip ttl"),
        IpAddr::V6(_) => ("ip6", "ip6 hoplimit"),
    };
    let mut rules = String::from("table netdev xdp_lb_mrouter {\n");
    for from in ifaces {
        let chain = format!("replicate_{}", from.replace('-', "_"));
        let dups: String = others(ifaces, from)
            .map(|to| format!(" dup to \"{to}\""))
            .collect();
        // One rule on every frame; the per-TTL rules only for the group's.
        let _ = writeln!(
            rules,
            "  chain ingress_{chain} {{\n    type filter hook ingress device \"{from}\" priority 0; policy accept;\n    meta protocol {family} {family} daddr {group} meta l4proto udp jump {chain}\n  }}"
        );
        let _ = writeln!(rules, "  chain {chain} {{");
        for ttl in 2..=u8::MAX {
            let _ = writeln!(
                rules,
                "    {ttl_field} {ttl} {ttl_field} set {}{dups} accept",
                ttl - 1
            );
        }
        let _ = writeln!(rules, "  }}");
    }
    rules.push_str("}\n");
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replication_lowers_the_ttl_and_never_sends_back_where_it_came_from() {
        let rules = nftables_replication(Ipv4Addr::new(239, 192, 0, 1), &["eth0", "s1", "s2"]);
        assert!(rules.contains(
            "hook ingress device \"s1\" priority 0; policy accept;\n    meta protocol ip ip daddr 239.192.0.1 meta l4proto udp jump replicate_s1"
        ));
        let s1: Vec<&str> = rules
            .split("chain replicate_s1 {")
            .nth(1)
            .and_then(|c| c.split('}').next())
            .expect("the chain of s1")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(s1.len(), 254, "a rule per TTL of 2..=255");
        assert_eq!(
            s1[0].trim(),
            "ip ttl 2 ip ttl set 1 dup to \"eth0\" dup to \"s2\" accept"
        );
        assert!(
            s1.iter()
                .all(|l| !l.contains("ip ttl 1 ") && !l.contains("\"s1\""))
        );
        assert!(!rules.contains("igmp"));
        let rules6 =
            nftables_replication("ff15::4c42".parse::<Ipv6Addr>().unwrap(), &["eth0", "s1"]);
        assert!(
            rules6.contains(
                "meta protocol ip6 ip6 daddr ff15::4c42 meta l4proto udp jump replicate_s1"
            )
        );
        assert!(rules6.contains("ip6 hoplimit 2 ip6 hoplimit set 1 dup to \"eth0\" accept"));
    }
}
