//! The program's maps. All are pinned by lb-user under its pin path.
use aya_ebpf::{
    Global,
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    AgingState, BackendEntry, BackendKey, COUNTER_SLOTS, DEFAULT_MAX_BACKENDS, GroupReports,
    GroupStatus, MAX_GROUPS,
};

/// The LB's own unicast address (network order), set by the loader.
#[unsafe(no_mangle)]
pub static LB_ADDR: Global<[u8; 4]> = Global::new([0; 4]);

/// The available-server list. lb-user may resize it at load time.
#[btf_map]
pub static BACKENDS: HashMap<BackendKey, BackendEntry, { DEFAULT_MAX_BACKENDS as usize }> =
    HashMap::new();

/// Aging state per backend. Written by lb-user only; declared here so that it
/// is created and pinned with BTF beside the server list.
#[btf_map]
pub static BACKEND_AGING: HashMap<BackendKey, AgingState, { DEFAULT_MAX_BACKENDS as usize }> =
    HashMap::new();

/// Announcement port (host order) -> group id.
#[btf_map]
pub static ANNOUNCE_PORTS: HashMap<u16, u32, { MAX_GROUPS as usize }> = HashMap::new();

/// Group address (network order) -> group id.
#[btf_map]
pub static GROUP_ADDRS: HashMap<[u8; 4], u32, { MAX_GROUPS as usize }> = HashMap::new();

/// IGMP report statistics per group.
#[btf_map]
pub static GROUP_REPORTS: PerCpuArray<GroupReports, { MAX_GROUPS as usize }> = PerCpuArray::new();

/// Group liveness, written by lb-user only (see BACKEND_AGING).
#[btf_map]
pub static GROUP_STATUS: Array<GroupStatus, { MAX_GROUPS as usize }> = Array::new();

/// Packet counters, indexed by `lb_common::Counter`.
#[btf_map]
pub static COUNTERS: PerCpuArray<u64, { COUNTER_SLOTS as usize }> = PerCpuArray::new();
