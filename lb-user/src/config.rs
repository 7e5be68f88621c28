//! What one LB instance serves: groups, each with its announcement port and
//! optionally a VIP with services. From the command line for one group, or
//! from a TOML file for several:
//!
//! ```toml
//! [[group]]
//! address = "239.192.0.1"
//! port = 2000
//! vip = "10.0.0.100"
//! services = ["tcp:80", "udp:53"]
//!
//! [[group]]            # IPv6 backends (protocol §9): registration only
//! address = "ff15::4c42"
//! port = 2001
//! ```
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{IPPROTO_TCP, IPPROTO_UDP, MAX_GROUPS, MAX_SERVICES, ServiceKey};
use lb_host::cli::{parse_any_group, parse_port};
use serde::Deserialize;

use crate::{maps::GroupConfig, tables::ServiceConfig};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config file: {0}")]
    Syntax(String),
    #[error("group {group}: {reason}")]
    Group { group: String, reason: String },
    #[error("groups {a} and {b} share an address or a port; each group needs its own")]
    Clash { a: String, b: String },
    #[error("at most {max} groups and {services} services per instance", max = MAX_GROUPS, services = MAX_SERVICES)]
    TooMany,
    #[error("no group configured")]
    Empty,
}

/// One group as written by the operator.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub address: String,
    pub port: Option<u16>,
    pub vip: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    group: Vec<GroupSpec>,
}

/// The validated plan of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub groups: Vec<GroupConfig>,
    pub services: Vec<ServiceConfig>,
    /// Distinct VIPs, to put on the interface.
    pub vips: Vec<IpAddr>,
}

/// `tcp:PORT` or `udp:PORT`.
pub fn parse_service(s: &str) -> Result<(u8, u16), String> {
    let (proto, port) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PROTO:PORT (tcp:80, udp:53)"))?;
    let proto = match proto {
        "tcp" => IPPROTO_TCP,
        "udp" => IPPROTO_UDP,
        _ => return Err(format!("{proto:?} is not tcp or udp")),
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((proto, port)),
        _ => Err(format!("{port:?} is not a port number")),
    }
}

/// `ADDR/LEN` (or a bare address, /32 or /128) of either family, with no
/// host bits set.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is neither an IPv4 nor an IPv6 address"))?;
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len.map(str::parse) {
        None => bits,
        Some(Ok(len)) if len <= bits => len,
        Some(_) => {
            return Err(format!(
                "{:?} is not a prefix length (0..={bits})",
                len.unwrap_or_default()
            ));
        }
    };
    let masked = match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
            u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0),
        )),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0),
        )),
    };
    if masked != addr {
        return Err(format!(
            "{s} has host bits set; did you mean {masked}/{len}?"
        ));
    }
    Ok((addr, len))
}

/// Parses a TOML config file's text.
pub fn parse_file(text: &str) -> Result<Vec<GroupSpec>, ConfigError> {
    let file: ConfigFile =
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.message().to_owned()))?;
    Ok(file.group)
}

/// Validates `specs`; a group without a port gets `default_port`.
pub fn plan(specs: &[GroupSpec], default_port: u16) -> Result<Plan, ConfigError> {
    if specs.is_empty() {
        return Err(ConfigError::Empty);
    }
    let mut plan = Plan {
        groups: Vec::new(),
        services: Vec::new(),
        vips: Vec::new(),
    };
    for (group_id, spec) in (0u32..).zip(specs) {
        let fail = |reason: String| ConfigError::Group {
            group: spec.address.clone(),
            reason,
        };
        let group = parse_any_group(&spec.address).map_err(fail)?;
        let port = parse_port(&spec.port.unwrap_or(default_port).to_string()).map_err(fail)?;
        let vip = spec
            .vip
            .as_deref()
            .map(|v| {
                let vip = v
                    .parse::<IpAddr>()
                    .map_err(|_| fail(format!("vip {v:?} is not an IP address")))?;
                if !is_reachable_unicast(vip) {
                    return Err(fail(format!(
                        "vip {vip} is not a unicast address a client can reach"
                    )));
                }
                Ok(vip)
            })
            .transpose()?;
        match (vip, spec.services.is_empty()) {
            (Some(_), true) => return Err(fail("a vip needs at least one service".into())),
            (None, false) => return Err(fail("services need a vip".into())),
            _ => {}
        }
        for service in &spec.services {
            let (proto, service_port) = parse_service(service).map_err(fail)?;
            let vip = vip.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
            let key = ServiceKey {
                vip: lb_common::addr::from_ip(vip),
                port: service_port,
                proto,
                _pad: 0,
            };
            if plan.services.iter().any(|s: &ServiceConfig| s.key == key) {
                return Err(fail(format!("{service} on {vip} is configured twice")));
            }
            plan.services.push(ServiceConfig {
                key,
                group_id,
                group_ipv6: group.is_ipv6(),
            });
        }
        if let Some(vip) = vip.filter(|v| !plan.vips.contains(v)) {
            plan.vips.push(vip);
        }
        plan.groups.push(GroupConfig { group, port });
    }
    for (i, a) in plan.groups.iter().enumerate() {
        if let Some(b) = plan.groups[i + 1..]
            .iter()
            .find(|b| a.group == b.group || a.port == b.port)
        {
            return Err(ConfigError::Clash {
                a: format!("{}:{}", a.group, a.port),
                b: format!("{}:{}", b.group, b.port),
            });
        }
    }
    if plan.groups.len() > MAX_GROUPS as usize || plan.services.len() > MAX_SERVICES as usize {
        return Err(ConfigError::TooMany);
    }
    Ok(plan)
}

/// Whether a VIP may be `addr`: unicast, neither unspecified, loopback,
/// broadcast nor IPv6 link-local (a VIP is reached through routers).
fn is_reachable_unicast(addr: IpAddr) -> bool {
    let common = !addr.is_unspecified() && !addr.is_loopback() && !addr.is_multicast();
    match addr {
        IpAddr::V4(v4) => common && !v4.is_broadcast(),
        IpAddr::V6(v6) => common && !v6.is_unicast_link_local() && v6.to_ipv4_mapped().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[group]]
        address = "239.192.0.1"
        vip = "10.0.0.100"
        services = ["tcp:80", "udp:53"]

        [[group]]
        address = "239.192.0.2"
        port = 2001
        vip = "10.0.0.101"
        services = ["tcp:443"]

        [[group]]
        address = "239.192.0.3"
        port = 2002

        [[group]]
        address = "ff15::4c42"
        port = 2003
    "#;

    #[test]
    fn cidrs() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        assert_eq!(parse_cidr("10.0.0.0/8"), Ok((v4(10, 0, 0, 0), 8)));
        assert_eq!(parse_cidr("10.1.2.3"), Ok((v4(10, 1, 2, 3), 32)));
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok((v4(0, 0, 0, 0), 0)));
        assert_eq!(
            parse_cidr("2001:db8::/32"),
            Ok(("2001:db8::".parse().unwrap(), 32))
        );
        assert_eq!(
            parse_cidr("2001:db8::5"),
            Ok(("2001:db8::5".parse().unwrap(), 128))
        );
        assert_eq!(parse_cidr("::/0"), Ok(("::".parse().unwrap(), 0)));
        for (bad, why) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "prefix length (0..=32)"),
            ("10.0.0/8", "neither an IPv4 nor an IPv6 address"),
            ("2001:db8::1/32", "did you mean 2001:db8::/32"),
            ("2001:db8::/129", "prefix length (0..=128)"),
            ("2001:db8::/x", "prefix length"),
        ] {
            let got = parse_cidr(bad).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
        }
    }

    #[test]
    fn a_file_with_several_groups_and_services() {
        let plan = plan(&parse_file(FILE).unwrap(), 2000).unwrap();
        assert_eq!(
            plan.groups,
            vec![
                GroupConfig {
                    group: Ipv4Addr::new(239, 192, 0, 1).into(),
                    port: 2000
                },
                GroupConfig {
                    group: Ipv4Addr::new(239, 192, 0, 2).into(),
                    port: 2001
                },
                GroupConfig {
                    group: Ipv4Addr::new(239, 192, 0, 3).into(),
                    port: 2002
                },
                GroupConfig {
                    group: "ff15::4c42".parse().unwrap(),
                    port: 2003
                },
            ]
        );
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let services: Vec<(u32, IpAddr, u16, u8)> = plan
            .services
            .iter()
            .map(|s| (s.group_id, s.key.vip(), s.key.port, s.key.proto))
            .collect();
        assert_eq!(
            services,
            vec![
                (0, v4(10, 0, 0, 100), 80, IPPROTO_TCP),
                (0, v4(10, 0, 0, 100), 53, IPPROTO_UDP),
                (1, v4(10, 0, 0, 101), 443, IPPROTO_TCP),
            ]
        );
        assert_eq!(plan.vips, vec![v4(10, 0, 0, 100), v4(10, 0, 0, 101)]);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("[[group]]\naddress = 1", "config file"),
            (
                "[[group]]\naddress = \"239.1.1.1\"\ncolour = \"red\"",
                "unknown field",
            ),
            (
                "[[group]]\naddress = \"10.1.1.1\"",
                "not a multicast address",
            ),
            (
                "[[group]]\naddress = \"239.1.1.1\"\nport = 80",
                "system port",
            ),
            (
                "[[group]]\naddress = \"239.1.1.1\"\nvip = \"10.0.0.1\"",
                "needs at least one service",
            ),
            (
                "[[group]]\naddress = \"239.1.1.1\"\nservices = [\"tcp:80\"]",
                "need a vip",
            ),
            (
                "[[group]]\naddress = \"239.1.1.1\"\nvip = \"10.0.0.1\"\nservices = [\"icmp:1\"]",
                "not tcp or udp",
            ),
            (
                "[[group]]\naddress = \"239.1.1.1\"\n[[group]]\naddress = \"239.1.1.2\"",
                "share an address or a port",
            ),
            ("", "no group"),
            (
                "[[group]]\naddress = \"ff15::4c42\"\nvip = \"fe80::1\"\nservices = [\"tcp:80\"]",
                "not a unicast address a client can reach",
            ),
            ("[[group]]\naddress = \"ff02::1\"", "another protocol"),
            (
                "[[group]]\naddress = \"2001:db8::1\"",
                "not a multicast address",
            ),
            (
                "[[group]]\naddress = \"ff15::4c42\"\n[[group]]\naddress = \"239.1.1.1\"",
                "share an address or a port",
            ),
        ];
        for (text, want) in cases {
            let got = match parse_file(text) {
                Ok(specs) => plan(&specs, 2000)
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.to_string()),
                Err(e) => e.to_string(),
            };
            assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
        }
    }
}
