//! The program's maps. All are pinned by lb-user under its pin path.
use aya_ebpf::{
    Global,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    AgingState, AuthClock, AuthKey, BackendEntry, BackendKey, COUNTER_SLOTS, DEFAULT_MAX_BACKENDS,
    DEFAULT_MAX_FLOWS, Flow, FlowKey, GroupReports, GroupStatus, MAGLEV_ENTRIES,
    MAX_ALLOW_PREFIXES, MAX_AUTH_KEYS, MAX_GROUPS, MAX_SERVICES, Service, ServiceKey,
};

/// The LB's own unicast address (network order), set by the loader.
#[unsafe(no_mangle)]
pub static LB_ADDR: Global<[u8; 4]> = Global::new([0; 4]);

/// MAC of the LB's interface, the source of forwarded frames; set by the loader.
#[unsafe(no_mangle)]
pub static LB_MAC: Global<[u8; 6]> = Global::new([0; 6]);

/// 1 when announcements must carry a valid tag; set by the loader.
#[unsafe(no_mangle)]
pub static AUTH_ON: Global<u8> = Global::new(0);

/// Announcement keys (SPEC 4.3), written by lb-user.
#[btf_map]
pub static AUTH_KEYS: Array<AuthKey, { MAX_AUTH_KEYS as usize }> = Array::new();

/// Wall-clock offset and allowed skew, kept current by lb-user.
#[btf_map]
pub static AUTH_CLOCK: Array<AuthClock, 1> = Array::new();

/// Last accepted sequence per backend, kept after the backend is removed.
#[btf_map]
pub static LAST_SEQUENCE: LruHashMap<BackendKey, u64, { 2 * DEFAULT_MAX_BACKENDS as usize }> =
    LruHashMap::new();

/// 1 when only sources in ANNOUNCE_ALLOW may announce; set by the loader.
#[unsafe(no_mangle)]
pub static ALLOWLIST_ON: Global<u8> = Global::new(0);

/// Source prefixes allowed to announce (network-order address, prefix length).
#[btf_map]
pub static ANNOUNCE_ALLOW: LpmTrie<[u8; 4], u8, { MAX_ALLOW_PREFIXES as usize }> = LpmTrie::new();

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

/// Virtual IPs (network order) -> number of services on them.
#[btf_map]
pub static VIPS: HashMap<[u8; 4], u32, { MAX_SERVICES as usize }> = HashMap::new();

/// Services, written by lb-user.
#[btf_map]
pub static SERVICES: HashMap<ServiceKey, Service, { MAX_SERVICES as usize }> = HashMap::new();

/// Maglev tables, two slots per service (see `Service::maglev_index`);
/// an all-zero entry means no backend.
#[btf_map]
pub static MAGLEV: Array<[u8; 4], { MAGLEV_ENTRIES as usize }> = Array::new();

/// Connection table: an established flow keeps its backend.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, Flow, { DEFAULT_MAX_FLOWS as usize }> = LruHashMap::new();
