//! A restart that keeps state (SIGQUIT; `RestartKillSignal=SIGQUIT` in
//! xdp-lb-agent.service). The group membership lives in the agent's two
//! sockets, the IGMP one and the routed one: when the last of them closes
//! the kernel sends a leave and the LB removes the backend at once (protocol
//! §4.1). So the exiting agent hands both sockets to the service manager's
//! descriptor store, keeps the VIP, the ARP settings and the decapsulation
//! program (its link pinned), records what the next agent needs beside its
//! state file, and exits without LEAVING. The next agent adopts the sockets
//! (no leave, no join), the VIP and the settings (restored on its own
//! stop), the program's link and the LBs it knew, then empties the store,
//! so that a later crash still leaves the group at once.
use std::{
    fs, io,
    net::IpAddr,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::Context;
use lb_host::service_manager;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{agent::Agent, start::VipSetup, state};

/// The sockets' names in the service manager's store.
pub const MEMBERSHIP_SOCKET: &str = "igmp";
pub const ROUTED_SOCKET: &str = "routed";

/// What an agent that exits keeping state leaves for the next one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub group: IpAddr,
    pub port: u16,
    /// Every LB that had queried it: they get LEAVING on the final stop.
    pub lbs: Vec<IpAddr>,
    pub vip: Option<KeptVip>,
    /// When the backend registered (Unix ms): its age goes on in the
    /// announcements of the next agent.
    #[serde(default)]
    pub registered_unix_ms: Option<u64>,
}

/// The direct-server-return setup left in place, with what to restore.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeptVip {
    pub addr: IpAddr,
    /// The agent added the VIP to the loopback (it goes on the final stop).
    pub added: bool,
    /// The interface's ARP settings before any agent changed them (an
    /// IPv4 VIP's; empty for an IPv6 one).
    #[serde(default)]
    pub arp_ignore: String,
    #[serde(default)]
    pub arp_announce: String,
}

/// What a predecessor handed over.
#[derive(Debug, Default)]
pub struct Inherited {
    pub record: Option<Record>,
    /// Its IGMP and routed sockets, when the service manager passed both.
    /// The membership socket (IGMP or MLD) and the routed one.
    pub sockets: Option<(OwnedFd, OwnedFd)>,
}

fn record_path(iface: &str) -> io::Result<PathBuf> {
    Ok(state::path(iface)?.with_extension("handover.json"))
}

/// Where the decapsulation link of the agent on `iface` is kept, under
/// `pin_dir` (a bpffs directory).
pub fn link_path(pin_dir: &Path, iface: &str) -> io::Result<PathBuf> {
    Ok(pin_dir.join(format!("{}-decap", state::instance_name(iface)?)))
}

/// Writes `record` for the next agent on `iface`.
pub fn save(iface: &str, record: &Record) -> io::Result<()> {
    let path = record_path(iface)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, serde_json::to_vec(record).map_err(io::Error::other)?)
}

/// Takes what a predecessor on `iface` left: its record (removed) and, from
/// the descriptors the service manager passed, its sockets (both, and
/// only with a record). A record that cannot be read is logged and
/// ignored: the agent then starts afresh (the passed sockets close).
pub fn take(iface: &str, passed: Vec<(String, OwnedFd)>) -> Inherited {
    let record = match read_record(iface) {
        Ok(record) => record,
        Err(e) => {
            warn!("the previous agent's record is unreadable, starting afresh: {e}");
            None
        }
    };
    let (mut membership, mut routed) = (None, None);
    for (name, fd) in passed {
        match name.as_str() {
            MEMBERSHIP_SOCKET => membership = Some(fd),
            ROUTED_SOCKET => routed = Some(fd),
            _ => {}
        }
    }
    let sockets = membership.zip(routed).filter(|_| record.is_some());
    Inherited { record, sockets }
}

fn read_record(iface: &str) -> io::Result<Option<Record>> {
    let path = record_path(iface)?;
    match fs::read(&path) {
        Ok(bytes) => {
            fs::remove_file(&path)?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Exits keeping state: the sockets go to the service
/// manager's store, the rest stays in place for the next agent. Fails,
/// having changed nothing, when no service manager takes the sockets.
pub fn hand_over(agent: &mut Agent, vip: Option<&mut VipSetup>) -> anyhow::Result<()> {
    service_manager::store(MEMBERSHIP_SOCKET, agent.membership.get_ref().as_fd())
        .and_then(|()| service_manager::store(ROUTED_SOCKET, agent.routed.get_ref().as_fd()))
        .context("handing the group membership to the service manager")?;
    let iface = agent.args.iface().to_owned();
    if let Some(decap) = agent.decap.take() {
        let kept = link_path(&agent.args.pin_path, &iface)
            .map_err(anyhow::Error::from)
            .and_then(|path| decap.keep(&path));
        if let Err(e) = kept {
            warn!("IPIP is not decapsulated until the next agent starts: {e:#}");
        }
    }
    let record = Record {
        group: agent.args.group,
        port: agent.args.port,
        lbs: agent.schedule.known_lbs().collect(),
        registered_unix_ms: Some(agent.registered_unix_ms),
        vip: vip.zip(agent.args.vip).map(|(setup, vip)| {
            let original = |i: usize| {
                setup
                    .arp
                    .as_ref()
                    .map_or_else(String::new, |arp| arp[i].original().to_owned())
            };
            let kept = KeptVip {
                addr: vip,
                added: setup.addr.owned(),
                arp_ignore: original(0),
                arp_announce: original(1),
            };
            setup.addr.keep();
            setup
                .arp
                .iter_mut()
                .flatten()
                .for_each(|sysctl| sysctl.keep());
            kept
        }),
    };
    save(&iface, &record).context("recording the state for the next agent")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_record_is_taken_once_and_an_unreadable_one_is_ignored() {
        let iface = format!("handover-test-{}", std::process::id());
        let record = Record {
            group: Ipv4Addr::new(239, 192, 0, 1).into(),
            port: 2000,
            lbs: vec![Ipv4Addr::new(10, 0, 0, 1).into()],
            vip: None,
            registered_unix_ms: Some(1),
        };
        save(&iface, &record).unwrap();
        assert_eq!(take(&iface, Vec::new()).record, Some(record));
        assert_eq!(take(&iface, Vec::new()).record, None, "taken once");
        fs::write(record_path(&iface).unwrap(), "not json").unwrap();
        let inherited = take(&iface, Vec::new());
        assert!(inherited.record.is_none() && inherited.sockets.is_none());
        assert!(
            !record_path(&iface).unwrap().exists(),
            "the bad record stays"
        );
    }
}
