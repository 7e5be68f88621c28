//! The service manager's side of a restart that keeps state, for tests
//! (no systemd runs as PID 1 here): a descriptor store that receives
//! sd_notify(3) `FDSTORE=1`/`FDSTOREREMOVE=1` datagrams with their
//! descriptors at `NOTIFY_SOCKET`, as systemd does for a unit with
//! `FileDescriptorStoreMax=`, and passes what it holds to the next process
//! as sd_listen_fds(3) describes (from fd 3, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, `LISTEN_PID`).
use std::{
    io::IoSliceMut,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixDatagram,
    },
    path::{Path, PathBuf},
};

use anyhow::Context;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// Where passed descriptors wait in the child before the shell moves them
/// to 3.. (above anything the spawning process has open).
const STAGING_FD: RawFd = 200;

pub struct FdStore {
    socket: UnixDatagram,
    path: PathBuf,
    held: Vec<(String, OwnedFd)>,
}

impl FdStore {
    /// A store listening at `path`.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)
            .with_context(|| format!("binding the notify socket {}", path.display()))?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            path: path.to_owned(),
            held: Vec::new(),
        })
    }

    /// The value of `NOTIFY_SOCKET` for a service of this store.
    pub fn notify_socket(&self) -> &Path {
        &self.path
    }

    /// Applies every message received so far; returns the names held.
    pub fn names(&mut self) -> anyhow::Result<Vec<String>> {
        while let Some((text, fds)) = self.receive()? {
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("FDNAME="))
                .unwrap_or("stored")
                .to_owned();
            if text.lines().any(|l| l == "FDSTORE=1") {
                self.held
                    .extend(fds.into_iter().map(|fd| (name.clone(), fd)));
            } else if text.lines().any(|l| l == "FDSTOREREMOVE=1") {
                self.held.retain(|(n, _)| *n != name);
            }
        }
        Ok(self.held.iter().map(|(n, _)| n.clone()).collect())
    }

    fn receive(&self) -> anyhow::Result<Option<(String, Vec<OwnedFd>)>> {
        let mut buf = [0u8; 512];
        let mut cmsg = nix::cmsg_space!([RawFd; 8]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e).context("receiving from the notify socket"),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in this
                // process for us alone.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let len = msg.bytes;
        Ok(Some((
            String::from_utf8_lossy(&buf[..len]).into_owned(),
            fds,
        )))
    }

    /// How the next process gets what the store holds: the descriptors to
    /// stage at `STAGING_FD..` in the child, the bash words that move them
    /// to 3.. and set `LISTEN_PID` before exec'ing the program, and the
    /// environment.
    pub fn pass(&mut self) -> anyhow::Result<Passing> {
        self.names()?;
        let fds: Vec<RawFd> = self.held.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        let moves: String = (0..fds.len())
            .map(|k| {
                format!(
                    "{}<&{} {}<&- ",
                    3 + k,
                    STAGING_FD + k as RawFd,
                    STAGING_FD + k as RawFd
                )
            })
            .collect();
        let script = format!(
            "{}export LISTEN_PID=$$; exec \"$0\" \"$@\"",
            if moves.is_empty() {
                String::new()
            } else {
                format!("exec {moves}; ")
            }
        );
        let names: Vec<&str> = self.held.iter().map(|(n, _)| n.as_str()).collect();
        Ok(Passing {
            fds,
            script,
            env: vec![
                ("NOTIFY_SOCKET".to_owned(), self.path.display().to_string()),
                ("LISTEN_FDS".to_owned(), names.len().to_string()),
                ("LISTEN_FDNAMES".to_owned(), names.join(":")),
            ],
        })
    }
}

/// What `Topology::spawn_managed` needs to start a process of a store.
pub struct Passing {
    pub fds: Vec<RawFd>,
    pub script: String,
    pub env: Vec<(String, String)>,
}

/// In the child, before exec: stages `fds` at `STAGING_FD..`, inheritable.
/// Only async-signal-safe calls (dup2, fcntl).
pub fn stage_in_child(fds: &[RawFd]) -> std::io::Result<()> {
    for (k, &fd) in fds.iter().enumerate() {
        let target = STAGING_FD + k as RawFd;
        // SAFETY: dup2 and fcntl on descriptors the child inherited.
        let ok =
            unsafe { libc::dup2(fd, target) >= 0 && libc::fcntl(target, libc::F_SETFD, 0) >= 0 };
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
