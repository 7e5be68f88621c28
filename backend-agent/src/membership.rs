//! The agent's membership socket, of its group's family: raw IGMP
//! (protocol §4.2) or raw ICMPv6 for MLD (§9). Both carry the LB's query
//! and the members' reports; the rest of the agent sees one kind of socket.
use std::{
    io,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
    time::Duration,
};

use lb_common::{
    mld::{MLD_V1_REPORT, MldMessage, mld_v1_message},
    wire::{IGMP_V2_REPORT, IgmpMessage, igmp_v2_message},
};
use lb_host::{igmp_socket::IgmpSocket, mld_socket::MldSocket, system};

/// The socket of the group's family.
pub enum Membership {
    Igmp(IgmpSocket),
    Mld(MldSocket),
}

/// What the agent heard on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A query whose group field (or multicast-address field) is `lb`;
    /// `for_group` if it was sent to the agent's group.
    Query {
        lb: IpAddr,
        max_resp: Duration,
        for_group: bool,
    },
    /// Another member's report for `group`.
    Report { group: IpAddr, source: IpAddr },
}

impl Membership {
    /// Opens the socket of `group`'s family on `iface` (IPv6: bound to its
    /// link-local address, which MLD leaves from), reports with `ttl`
    /// (IPv4; MLD always has hop limit 1).
    pub fn open(iface: &str, ifindex: u32, group: IpAddr, ttl: u32) -> anyhow::Result<Self> {
        Ok(match group {
            IpAddr::V4(_) => Self::Igmp(IgmpSocket::open(iface, ifindex, ttl)?),
            IpAddr::V6(_) => {
                let link_local = system::interface_ipv6_link_local(iface)?;
                Self::Mld(MldSocket::open(iface, ifindex, link_local)?)
            }
        })
    }

    /// Takes over a predecessor's socket of `group`'s family.
    pub fn adopt(fd: OwnedFd, ifindex: u32, group: IpAddr, ttl: u32) -> io::Result<Self> {
        Ok(match group {
            IpAddr::V4(_) => Self::Igmp(IgmpSocket::adopt(fd, ifindex, ttl)?),
            IpAddr::V6(_) => Self::Mld(MldSocket::adopt(fd, ifindex)?),
        })
    }

    /// `igmp` or `mld`: the reports' kind in the metrics.
    pub fn protocol(&self) -> &'static str {
        match self {
            Self::Igmp(_) => "igmp",
            Self::Mld(_) => "mld",
        }
    }

    pub fn join(&self, group: IpAddr) -> io::Result<()> {
        match (self, group) {
            (Self::Igmp(socket), IpAddr::V4(group)) => socket.join(group),
            (Self::Mld(socket), IpAddr::V6(group)) => socket.join(group),
            _ => Err(other_family(group)),
        }
    }

    pub fn leave(&self, group: IpAddr) -> io::Result<()> {
        match (self, group) {
            (Self::Igmp(socket), IpAddr::V4(group)) => socket.leave(group),
            (Self::Mld(socket), IpAddr::V6(group)) => socket.leave(group),
            _ => Err(other_family(group)),
        }
    }

    /// The membership report for `group`, to the group: IGMPv2 or MLDv1,
    /// which other members hear and suppress theirs for.
    pub fn report(&self, group: IpAddr) -> io::Result<()> {
        match (self, group) {
            (Self::Igmp(socket), IpAddr::V4(group)) => {
                socket.send(&igmp_v2_message(IGMP_V2_REPORT, 0, group.octets()), group)
            }
            (Self::Mld(socket), IpAddr::V6(group)) => {
                socket.send(&mld_v1_message(MLD_V1_REPORT, 0, group.octets()), group)
            }
            _ => Err(other_family(group)),
        }
    }

    /// One queued message, if it is a query or a report (`WouldBlock`
    /// when none is queued); `group` is the agent's.
    pub fn try_recv(&self, group: IpAddr) -> io::Result<Option<Heard>> {
        Ok(match self {
            Self::Igmp(socket) => socket.try_recv()?.and_then(|r| match r.message {
                IgmpMessage::Query {
                    max_resp_tenths,
                    group_field,
                } => Some(Heard::Query {
                    lb: IpAddr::from(group_field),
                    max_resp: Duration::from_millis(u64::from(max_resp_tenths) * 100),
                    for_group: IpAddr::V4(r.destination) == group,
                }),
                IgmpMessage::Report { group } => Some(Heard::Report {
                    group: IpAddr::from(group),
                    source: r.source.into(),
                }),
                _ => None,
            }),
            // Bound to an address, a raw ICMPv6 socket gets multicast only
            // for the groups it joined itself (the kernel's
            // inet6_mc_check): a query it reads went to the agent's group.
            Self::Mld(socket) => {
                let received = socket.try_recv()?;
                match received.message {
                    MldMessage::Query {
                        max_resp_ms,
                        address,
                    } => Some(Heard::Query {
                        lb: IpAddr::from(address),
                        max_resp: Duration::from_millis(u64::from(max_resp_ms)),
                        for_group: true,
                    }),
                    MldMessage::Report { group } => Some(Heard::Report {
                        group: IpAddr::from(group),
                        source: received.source.into(),
                    }),
                    MldMessage::Other => None,
                }
            }
        })
    }
}

fn other_family(group: IpAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{group} is not of the membership socket's family"),
    )
}

impl AsFd for Membership {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Igmp(socket) => socket.as_fd(),
            Self::Mld(socket) => socket.as_fd(),
        }
    }
}

impl AsRawFd for Membership {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}
