//! One LB instance per pin directory: its lock, its pins (maps and the XDP
//! link), and how a new `run` adopts what a killed one left attached.
use std::{
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttach},
    xdp::XdpLink,
};
use lb_common::FAMILY_PROGRAMS;

use crate::maps::ALL_MAPS;

/// Name of the pinned XDP link in the pin directory.
pub const LINK_PIN: &str = "LINK";
/// Name of the pinned TCX link of the GSO program in the pin directory.
pub const GSO_LINK_PIN: &str = "GSO_LINK";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("another `lb-user run` uses {dir}; stop it first")]
    Busy { dir: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinned link {path}: {reason}")]
    Link { path: PathBuf, reason: String },
}

/// Held while an instance runs on a pin directory: a second `run` or a
/// `stop` on the same directory fails instead of fighting over the maps.
pub struct InstanceLock {
    _file: fs::File,
    path: PathBuf,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Unlinked while still locked: whoever opens the path next makes a
        // new file, and nobody is left waiting on this one.
        let _ = fs::remove_file(&self.path);
    }
}

/// A file of the instance at `pin_dir` with extension `ext`: bpffs holds no
/// regular files, so they live under /run.
pub fn run_file(pin_dir: &Path, ext: &str) -> PathBuf {
    let name = pin_dir.to_string_lossy().replace('/', "%");
    Path::new(RUN_DIR).join(format!("{name}.{ext}"))
}

const RUN_DIR: &str = "/run/xdp-lb";

impl InstanceLock {
    pub fn acquire(pin_dir: &Path) -> Result<Self, InstanceError> {
        let lock_dir = Path::new(RUN_DIR);
        let path = run_file(pin_dir, "lock");
        let lock_err = |source| InstanceError::Lock {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(lock_dir).map_err(lock_err)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(InstanceError::Busy {
                dir: pin_dir.to_owned(),
            });
        }
        Ok(Self { _file: file, path })
    }
}

/// Removes every pin of an instance: the link first (which detaches XDP
/// once no process holds it), then the maps and the directory. Returns the
/// names removed.
pub fn remove_pins(dir: &Path) -> Vec<&'static str> {
    let removed = [LINK_PIN, GSO_LINK_PIN, FAMILY_PROGRAMS]
        .into_iter()
        .chain(ALL_MAPS.iter().copied())
        .filter(|name| fs::remove_file(dir.join(name)).is_ok())
        .collect();
    let _ = fs::remove_dir(dir);
    removed
}

/// The XDP program attached through a pinned link, so that it stays
/// attached and forwarding if the control plane is killed.
pub struct Attachment {
    /// True if a link left by an earlier instance was taken over.
    pub adopted: bool,
}

/// Attaches `program` to `ifindex` through a new pinned link, or, if a
/// killed instance left one at `dir`, swaps `program` into that link
/// atomically: packets never meet a detached interface.
pub fn attach_or_adopt(
    program: &mut Xdp,
    ifindex: u32,
    mode: XdpMode,
    dir: &Path,
) -> Result<Attachment, InstanceError> {
    let path = dir.join(LINK_PIN);
    let link_err = |reason: String| InstanceError::Link {
        path: path.clone(),
        reason,
    };
    if path.exists() {
        let pinned = PinnedLink::from_pin(&path).map_err(|e| link_err(e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| link_err(e.to_string()))?;
        program
            .attach_to_link(link)
            .map_err(|source| InstanceError::Program {
                what: "replacing the program in the pinned link".into(),
                source,
            })?;
        return Ok(Attachment { adopted: true });
    }
    let id = program
        .attach(ifindex, mode)
        .map_err(|source| InstanceError::Program {
            what: "attaching XDP (another XDP program may be attached; or try --xdp-mode skb)"
                .into(),
            source,
        })?;
    let link = program
        .take_link(id)
        .map_err(|source| InstanceError::Program {
            what: "taking the XDP link".into(),
            source,
        })?;
    let fd_link = FdLink::try_from(link).map_err(|e| {
        link_err(format!(
            "not a bpf_link ({e}); the kernel is too old to keep XDP attached across restarts"
        ))
    })?;
    // The program stays attached as long as this pin exists.
    fd_link.pin(&path).map_err(|e| link_err(e.to_string()))?;
    Ok(Attachment { adopted: false })
}

/// Attaches the GSO program to `ifindex`'s ingress through a new pinned
/// TCX link, or swaps it into the link a killed instance left at `dir`, as
/// [`attach_or_adopt`] does for XDP.
pub fn attach_or_adopt_gso(
    program: &mut SchedClassifier,
    ifindex: u32,
    dir: &Path,
) -> Result<Attachment, InstanceError> {
    let path = dir.join(GSO_LINK_PIN);
    let link_err = |reason: String| InstanceError::Link {
        path: path.clone(),
        reason,
    };
    let program_err = |what: &str| {
        let what = what.to_owned();
        move |source| InstanceError::Program { what, source }
    };
    if path.exists() {
        let pinned = PinnedLink::from_pin(&path).map_err(|e| link_err(e.to_string()))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))
            .map_err(|e| link_err(e.to_string()))?;
        program
            .attach_to_link(link)
            .map_err(program_err("replacing the GSO program in the pinned link"))?;
        return Ok(Attachment { adopted: true });
    }
    let attach = TcAttach::Tcx {
        attach_type: TcAttachType::Ingress,
        order: LinkOrder::default(),
    };
    let id = program.attach(ifindex, attach).map_err(program_err(
        "attaching the GSO program to the interface's ingress (TCX needs Linux 6.6)",
    ))?;
    let link = program
        .take_link(id)
        .map_err(program_err("taking the GSO program's link"))?;
    let fd_link = FdLink::try_from(link).map_err(|e| link_err(e.to_string()))?;
    fd_link.pin(&path).map_err(|e| link_err(e.to_string()))?;
    Ok(Attachment { adopted: false })
}

/// `--xdp-mode` as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// A mode that forwards on this interface: generic on a veth, else the
    /// kernel's choice (native where the driver supports it).
    Auto,
    /// Native (driver) XDP.
    Driver,
    /// Generic XDP in the network stack.
    Skb,
}

/// The attach mode for an interface, and why, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeChoice {
    pub mode: XdpMode,
    pub why: &'static str,
    /// The choice will not forward: say so as a warning.
    pub forwarding_lost: bool,
}

/// Picks the attach mode for `--xdp-mode` on an interface whose kernel
/// driver is `driver`. On a veth, native-mode XDP_TX frames are lost unless
/// the peer runs an XDP program, while generic mode delivers them.
pub fn choose_mode(requested: ModeArg, driver: Option<&str>) -> ModeChoice {
    let veth = driver == Some("veth");
    let (mode, why, forwarding_lost) = match requested {
        ModeArg::Auto if veth => (
            XdpMode::Skb,
            "generic (skb) mode on a veth: native XDP_TX frames reach the peer only if it runs XDP",
            false,
        ),
        ModeArg::Auto => (
            XdpMode::Default,
            "the kernel's choice: native where the driver supports it, generic otherwise",
            false,
        ),
        ModeArg::Driver if veth => (
            XdpMode::Driver,
            "native mode on a veth: forwarded frames (XDP_TX) are lost unless the peer runs an \
             XDP program; use --xdp-mode auto or skb",
            true,
        ),
        ModeArg::Driver => (XdpMode::Driver, "native mode, as asked", false),
        ModeArg::Skb => (XdpMode::Skb, "generic (skb) mode, as asked", false),
    };
    ModeChoice {
        mode,
        why,
        forwarding_lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_forwards_on_a_veth_and_driver_there_is_a_warning() {
        assert_eq!(choose_mode(ModeArg::Auto, Some("veth")).mode, XdpMode::Skb);
        assert_eq!(
            choose_mode(ModeArg::Auto, Some("virtio_net")).mode,
            XdpMode::Default
        );
        assert_eq!(choose_mode(ModeArg::Auto, None).mode, XdpMode::Default);
        let driver_on_veth = choose_mode(ModeArg::Driver, Some("veth"));
        assert_eq!(driver_on_veth.mode, XdpMode::Driver);
        assert!(driver_on_veth.forwarding_lost);
        assert!(!choose_mode(ModeArg::Driver, Some("ixgbe")).forwarding_lost);
        assert_eq!(choose_mode(ModeArg::Skb, Some("ixgbe")).mode, XdpMode::Skb);
    }
}
