//! An array map created with BPF_F_MMAPABLE, mapped into this process so
//! that lb-user changes its words atomically beside XDP (a map update
//! through the syscall would overwrite a bump XDP made meanwhile).
use std::{
    ffi::c_void,
    marker::PhantomData,
    num::NonZeroUsize,
    os::fd::AsFd,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    Pod,
    maps::{Array, IterableMap, Map, MapData, MapError},
    sys::SyscallError,
};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// The map's values, shared with the kernel.
pub struct MappedArray<V: Pod> {
    base: NonNull<c_void>,
    bytes: NonZeroUsize,
    len: u32,
    /// The handle, kept with the mapping it was made from.
    _map: Array<MapData, V>,
    _values: PhantomData<V>,
}

// SAFETY: the mapping is shared memory that every access reaches through
// atomics; no thread-affine state.
unsafe impl<V: Pod> Send for MappedArray<V> {}
// SAFETY: as above: `&self` methods only use atomic operations.
unsafe impl<V: Pod> Sync for MappedArray<V> {}

impl TryFrom<Map> for MappedArray<u32> {
    type Error = MapError;

    fn try_from(map: Map) -> Result<Self, MapError> {
        let array: Array<MapData, u32> = map.try_into()?;
        let len = array.len();
        // The kernel rounds the length up to whole pages, as it rounds the
        // array's value area.
        let bytes = NonZeroUsize::new(len as usize * size_of::<u32>()).ok_or(
            MapError::InvalidValueSize {
                size: 0,
                expected: size_of::<u32>(),
            },
        )?;
        // SAFETY: a new shared mapping of the map's value area; nothing else
        // aliases it in this process, and it lives until `drop`.
        let base = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                array.map().fd().as_fd(),
                0,
            )
        }
        .map_err(|errno| SyscallError {
            call: "mmap",
            io_error: errno.into(),
        })?;
        Ok(Self {
            base,
            bytes,
            len,
            _map: array,
            _values: PhantomData,
        })
    }
}

impl MappedArray<u32> {
    /// Adds one to word `index` (past the end: nothing).
    pub fn bump(&self, index: u32) {
        if index < self.len {
            // SAFETY: inside the mapping (index < len, len words mapped),
            // aligned (page-aligned base, u32 steps), valid while `self` is.
            let word = unsafe {
                AtomicU32::from_ptr(self.base.cast::<u32>().as_ptr().add(index as usize))
            };
            word.fetch_add(1, Ordering::Release);
        }
    }
}

impl<V: Pod> Drop for MappedArray<V> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `try_from`, unmapped once.
        let _ = unsafe { munmap(self.base, self.bytes.get()) };
    }
}
