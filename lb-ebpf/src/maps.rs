//! The program's maps, from the one table in `lb_common::program_maps!`
//! (lb-user pins and adopts the same list), and the globals set at load time
//! (`lb_common::program_globals!`).
use aya_ebpf::{
    Global,
    bindings::BPF_F_MMAPABLE,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
    macros::btf_map,
};
use lb_ebpf::declare_maps;

/// Turns each row of `lb_common::program_globals!` into a global that
/// the loader sets.
macro_rules! declare_globals {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr; )*) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            pub static $name: Global<$ty> = Global::new($default);
        )*
    };
}
lb_common::program_globals!(declare_globals);

/// The LB's address (`LB_ADDR`), network order.
#[inline(always)]
pub fn lb_addr() -> [u8; 4] {
    LB_ADDR.load().to_ne_bytes()
}

/// The LB's netmask (`SEGMENT_MASK`), network order.
#[inline(always)]
pub fn segment_mask() -> [u8; 4] {
    SEGMENT_MASK.load().to_ne_bytes()
}

/// The LB interface's MAC (`LB_MAC`).
#[inline(always)]
pub fn lb_mac() -> [u8; 6] {
    let [a, b, c, d, e, f, ..] = LB_MAC.load().to_ne_bytes();
    [a, b, c, d, e, f]
}

/// The LB's IPv6 address (`LB_ADDR6`), network order.
#[inline(always)]
pub fn lb_addr6() -> [u8; 16] {
    LB_ADDR6.load().to_ne_bytes()
}

/// The LB's IPv6 netmask (`SEGMENT6_MASK`), network order.
#[inline(always)]
pub fn segment6_mask() -> [u8; 16] {
    SEGMENT6_MASK.load().to_ne_bytes()
}

/// An array that lb-user maps into its memory (see `program_maps!`).
type MmapArray<T, const MAX_ENTRIES: usize> = Array<T, MAX_ENTRIES, { BPF_F_MMAPABLE as usize }>;

lb_common::program_maps!(declare_maps);

/// The programs the XDP program tail-calls (`lb_common::FAMILY_PROGRAM_NAMES`), filled by
/// the loader: outside `program_maps!`, as it is not pinned.
#[btf_map]
pub static FAMILY_PROGRAMS: ProgramArray<{ lb_common::FAMILY_PROGRAM_NAMES.len() }> =
    ProgramArray::new();

/// The backend a program with 16-byte backend addresses picked for the
/// packet it hands to the wrap program (per CPU), written before the tail
/// call and read by that program: outside `program_maps!`, as it holds
/// nothing past the packet.
#[btf_map]
pub static WRAP_HANDOFFS: PerCpuArray<lb_common::WrapHandoff, 1> = PerCpuArray::new();

/// The type of `ANNOUNCE_PORTS` and `ANNOUNCE_PORTS6`.
pub type AnnouncePorts = Array<u32, { 1 << 16 }>;
