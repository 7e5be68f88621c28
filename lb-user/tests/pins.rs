//! Every map of the XDP object is pinned by a fresh load and adopted (the
//! same kernel map, not a copy) by the next load on the same pin path: a
//! map added to `lb_common::program_maps!` needs nothing else (the IPv6
//! half's program array, declared apart, is pinned and adopted too). Needs root
//! and the bpffs at /sys/fs/bpf (`./xtask.sh setup` mounts it).
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, MapInfo};
use lb_common::FAMILY_PROGRAMS;
use lb_user::{
    instance::remove_pins,
    loader::load_program,
    maps::{ALL_MAPS, LbMaps},
};

pub mod common;
use common::LOAD;

/// Maps that belong to one load and are never pinned: the sections that
/// hold the globals the loader sets (`.rodata`, `.bss`, `.data`), and
/// aya-log's ring, which the process that loaded the program reads.
fn per_load(name: &str) -> bool {
    name.starts_with('.') || name == "AYA_LOGS" || name == lb_common::WRAP_HANDOFFS
}

fn data(map: &Map) -> &MapData {
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::LpmTrie(d)
        | Map::ProgramArray(d)
        | Map::RingBuf(d) => d,
        other => panic!("a map of a kind this test does not know: {other:?}"),
    }
}

fn id(ebpf: &aya::Ebpf, name: &str) -> u32 {
    let map = ebpf
        .map(name)
        .unwrap_or_else(|| panic!("the object has no map {name}"));
    data(map).info().unwrap().id()
}

/// A pin directory of this test's own, removed however the test ends.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_pins(&self.0);
    }
}

#[test]
fn every_map_is_pinned_and_adopted() {
    let dir = PinDir(Path::new("/sys/fs/bpf").join(format!("xdp-lb-pins-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("a directory on the bpffs at /sys/fs/bpf (root?)");
    let first = load_program(LOAD, Some(&dir.0)).expect("load the XDP program (are you root?)");

    let mut in_object: Vec<&str> = first
        .maps()
        .map(|(n, _)| n)
        .filter(|n| !per_load(n))
        .collect();
    in_object.sort_unstable();
    // The maps of `program_maps!`, and the program array of the IPv6 half.
    let mut declared: Vec<&str> = ALL_MAPS.iter().copied().chain([FAMILY_PROGRAMS]).collect();
    declared.sort_unstable();
    assert_eq!(
        in_object, declared,
        "maps of the object vs. lb_common::program_maps! and FAMILY_PROGRAMS"
    );

    let pinned: Vec<(&str, u32)> = declared
        .iter()
        .map(|&name| {
            let info = MapInfo::from_pin(dir.0.join(name))
                .unwrap_or_else(|e| panic!("{name} is not pinned: {e}"));
            assert_eq!(
                info.id(),
                id(&first, name),
                "{name}: the pin is another map"
            );
            (name, info.id())
        })
        .collect();

    let mut second = load_program(LOAD, Some(&dir.0)).expect("a second load on the same pins");
    for &(name, pinned_id) in &pinned {
        assert_eq!(id(&second, name), pinned_id, "{name} was not adopted");
    }
    LbMaps::take(&mut second).expect("typed handles on every adopted map");
    drop((first, second));

    let mut removed = remove_pins(&dir.0);
    removed.sort_unstable();
    assert_eq!(removed, declared, "lb-user stop removes every map pin");
}
