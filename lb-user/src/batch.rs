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

/// One `BPF_MAP_LOOKUP_BATCH` call: up to `count` (at most CHUNK) entries
/// after `in_token` (from the start of the map without one) into `keys`
/// and `values` (`per_key` values each: one per CPU for a per-CPU map),
/// which it empties first; the kernel's next token goes to `out_token`.
/// Returns false at the end of the map (the last entries come with it).
fn lookup_chunk<T, K, V>(
    fd: BorrowedFd<'_>,
    (in_token, out_token): (Option<&T>, &mut T),
    (keys, values): (&mut Vec<MaybeUninit<K>>, &mut Vec<MaybeUninit<V>>),
    count: usize,
    per_key: usize,
) -> io::Result<bool> {
    keys.clear();
    values.clear();
    keys.reserve(CHUNK);
    values.reserve(CHUNK * per_key);
    let mut attr = BatchAttr {
        in_batch: in_token.map_or(0, |t| std::ptr::from_ref(t) as u64),
        out_batch: std::ptr::from_mut(out_token) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: count.min(CHUNK) as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` describes buffers of at least `count` keys and values
    // (`per_key` each; a per-CPU map's V is a multiple of 8 bytes, as the
    // kernel lays its values out) and two tokens (as large as the map's batch token), all of which
    // outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>(),
        )
    };
    let error = (rc < 0).then(io::Error::last_os_error);
    let copied = (attr.count as usize).min(count.min(CHUNK));
    // SAFETY: the kernel initialised the first `copied` keys and values.
    unsafe {
        keys.set_len(copied);
        values.set_len(copied * per_key);
    }
    match error {
        None => Ok(true),
        Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Some(e) => Err(e),
    }
}

/// Every entry of the hash map behind `fd` (keys `K`, values `V`, as the
/// map was created with). Entries inserted or removed meanwhile may or may
/// not be included, as with any iteration of a live map.
pub fn lookup_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    // The kernel's batch token (a bucket index for hash maps, 4 bytes).
    let (mut token, mut next_token) = (0u64, 0u64);
    let mut entries = Vec::new();
    let mut first = true;
    loop {
        let in_token = (!first).then_some(&token);
        let more = lookup_chunk(
            fd,
            (in_token, &mut next_token),
            (&mut keys, &mut values),
            CHUNK,
            1,
        )?;
        entries.extend(
            keys.drain(..)
                .zip(values.drain(..))
                // SAFETY: initialised by the kernel; K and V are plain data.
                .map(|(k, v)| unsafe { (k.assume_init(), v.assume_init()) }),
        );
        if !more {
            return Ok(entries);
        }
        token = next_token;
        first = false;
    }
}

/// `count` values of the array behind `fd` from index `start` on.
pub fn lookup_range<V: Pod>(fd: BorrowedFd<'_>, start: u32, count: u32) -> io::Result<Vec<V>> {
    lookup_range_per_key(fd, (start, count), 1)
}

/// `count` entries of the per-CPU array behind `fd` from index `start` on,
/// `cpus` values each (one per possible CPU), one entry after another.
pub fn lookup_range_per_cpu<V: Pod>(
    fd: BorrowedFd<'_>,
    start: u32,
    count: u32,
    cpus: usize,
) -> io::Result<Vec<V>> {
    // The kernel rounds each CPU's value up to 8 bytes.
    assert_eq!(size_of::<V>() % 8, 0, "a per-CPU value of whole words");
    lookup_range_per_key(fd, (start, count), cpus)
}

/// `count` entries from index `start` on, `per_key` values each.
fn lookup_range_per_key<V: Pod>(
    fd: BorrowedFd<'_>,
    (start, count): (u32, u32),
    per_key: usize,
) -> io::Result<Vec<V>> {
    let count = count as usize * per_key;
    let (mut keys, mut values) = (Vec::<MaybeUninit<u32>>::new(), Vec::<MaybeUninit<V>>::new());
    let mut out = Vec::with_capacity(count);
    // An array's batch token is the last index read: start after `start - 1`.
    let (mut token, mut next_token) = (start.wrapping_sub(1), 0u32);
    while out.len() < count {
        let in_token = (start != 0 || !out.is_empty()).then_some(&token);
        let more = lookup_chunk(
            fd,
            (in_token, &mut next_token),
            (&mut keys, &mut values),
            (count - out.len()) / per_key,
            per_key,
        )?;
        // SAFETY: initialised by the kernel; V is plain data.
        out.extend(values.drain(..).map(|v| unsafe { v.assume_init() }));
        if !more {
            break;
        }
        token = next_token;
    }
    Ok(out)
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
