//! The service manager's file descriptor store (sd_notify(3) `FDSTORE=1`,
//! sd_listen_fds(3)): a process hands sockets to the manager when it exits
//! for a restart and gets them back, by name, in the next instance. With
//! systemd: `FileDescriptorStoreMax=` and `NotifyAccess=main` in the unit.
//! The protocol is plain datagrams on `$NOTIFY_SOCKET` with the descriptors
//! as SCM_RIGHTS, and `LISTEN_FDS`/`LISTEN_FDNAMES`/`LISTEN_PID` from fd 3 on.
use std::{
    ffi::OsString,
    io::IoSlice,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, net::UnixDatagram},
    },
};

use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};

/// The first descriptor a service manager passes (sd_listen_fds(3)).
const FIRST_PASSED_FD: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum FdStoreError {
    #[error("no service manager to hold descriptors (NOTIFY_SOCKET is not set)")]
    NoManager,
    #[error("NOTIFY_SOCKET={0:?} is not a usable socket address")]
    BadAddress(OsString),
    #[error("sending to the service manager at NOTIFY_SOCKET: {0}")]
    Send(std::io::Error),
}

/// The manager's notification socket, from `$NOTIFY_SOCKET` (a path, or
/// an abstract name after `@`).
fn manager_address() -> Result<UnixAddr, FdStoreError> {
    let raw = std::env::var_os("NOTIFY_SOCKET").ok_or(FdStoreError::NoManager)?;
    let bytes = raw.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name),
        None => UnixAddr::new(bytes),
    };
    address.map_err(|_| FdStoreError::BadAddress(raw))
}

fn notify(message: &str, fds: &[RawFd]) -> Result<(), FdStoreError> {
    let address = manager_address()?;
    let socket = UnixDatagram::unbound().map_err(FdStoreError::Send)?;
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg(
        socket.as_raw_fd(),
        &[IoSlice::new(message.as_bytes())],
        cmsgs,
        MsgFlags::empty(),
        Some(&address),
    )
    .map_err(|errno| FdStoreError::Send(errno.into()))?;
    Ok(())
}

/// Hands `fd` to the manager's store under `name` (the manager keeps a
/// duplicate; the caller's copy stays open).
pub fn store(name: &str, fd: BorrowedFd<'_>) -> Result<(), FdStoreError> {
    notify(&format!("FDSTORE=1\nFDNAME={name}"), &[fd.as_raw_fd()])
}

/// Asks the manager to close what it holds under `name`.
pub fn remove(name: &str) -> Result<(), FdStoreError> {
    notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[])
}

/// The descriptors the manager passed to this process, with their names,
/// taken once (the variables are removed so that children do not see them).
/// Empty when none were passed to this process.
pub fn take_passed() -> Vec<(String, OwnedFd)> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // SAFETY: the process is single-threaded here (called before the
    // runtime starts), so nothing reads the environment concurrently.
    unsafe {
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
    }
    if !for_us {
        return Vec::new();
    }
    let mut names = names.split(':');
    (FIRST_PASSED_FD..FIRST_PASSED_FD + count.max(0))
        .map(|fd| {
            // SAFETY: the manager passed these descriptors to this process
            // (LISTEN_PID is ours) and nothing else took them.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // Passed descriptors come without close-on-exec.
            // SAFETY: fcntl on a descriptor this process owns.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            (names.next().unwrap_or("unknown").to_owned(), owned)
        })
        .collect()
}
