//! Whole hash maps in a few syscalls: `BPF_MAP_LOOKUP_BATCH` copies up to
//! a chunk of entries per call, where aya's iterator spends two syscalls
//! on every entry (next key, then lookup). The control loop reads the
//! server list this way, so its cost stays small at tens of thousands of
//! backends. aya has no batch operations; this is the raw command.
use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries copied per call.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of the hash map behind `fd` (keys `K`, values `V`, as the
/// map was created with). Entries inserted or removed meanwhile may or may
/// not be included, as with any iteration of a live map.
pub fn lookup_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(CHUNK);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK);
    // The kernel's batch token (a bucket index for hash maps).
    let mut token = 0u64;
    let mut next_token = 0u64;
    let mut entries = Vec::new();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next_token) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes buffers of CHUNK keys and values that
        // outlive the call, and tokens of 8 bytes (the kernel writes 4).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let copied = (attr.count as usize).min(CHUNK);
        // SAFETY: the kernel initialised the first `copied` keys and values.
        unsafe {
            keys.set_len(copied);
            values.set_len(copied);
        }
        entries.extend(
            keys.drain(..)
                .zip(values.drain(..))
                // SAFETY: initialised above; K and V are plain data.
                .map(|(k, v)| unsafe { (k.assume_init(), v.assume_init()) }),
        );
        match error {
            None => {}
            // The end of the map: the last chunk came with it.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(entries),
            Some(e) => return Err(e),
        }
        token = next_token;
        first = false;
    }
}

/// `BPF_MAP_UPDATE_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Writes `values[i]` at `keys[i]` in the map behind `fd`, a chunk per
/// syscall (the Maglev tables: up to millions of entries).
pub fn update_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    for (keys, values) in keys.chunks(CHUNK * 16).zip(values.chunks(CHUNK * 16)) {
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes `keys` and `values`, which outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `count` values of the array behind `fd` from index `start` on.
pub fn lookup_range<V: Pod>(fd: BorrowedFd<'_>, start: u32, count: u32) -> io::Result<Vec<V>> {
    let count = count as usize;
    let mut keys: Vec<MaybeUninit<u32>> = Vec::with_capacity(CHUNK);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK);
    let mut out = Vec::with_capacity(count);
    // An array's batch token is the last index read: start after `start - 1`.
    let mut token = start.wrapping_sub(1);
    let mut next_token = 0u32;
    while out.len() < count {
        let mut attr = BatchAttr {
            in_batch: if start == 0 && out.is_empty() {
                0
            } else {
                (&raw const token) as u64
            },
            out_batch: (&raw mut next_token) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK.min(count - out.len()) as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: as in `lookup_all`, with 4-byte tokens.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let copied = (attr.count as usize).min(CHUNK);
        // SAFETY: the kernel initialised the first `copied` values.
        unsafe { values.set_len(copied) };
        // SAFETY: initialised above; V is plain data.
        out.extend(values.drain(..).map(|v| unsafe { v.assume_init() }));
        match error {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => return Err(e),
        }
        token = next_token;
    }
    Ok(out)
}
