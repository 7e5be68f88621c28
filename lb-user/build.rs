//! Builds the XDP object on every relevant change, so the binary and the
//! tests never embed a stale one.
use std::{env, fs, path::PathBuf};

fn main() {
    for input in ebpf_build::ebpf_inputs() {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // One eBPF target dir for all userspace profiles: the object does not
    // depend on them, and a nightly build-std takes a while.
    let target_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf");
    let object = match ebpf_build::build(&target_dir) {
        Ok(object) => object,
        Err(e) => {
            println!("cargo::error={e}");
            std::process::exit(1);
        }
    };
    fs::copy(&object, out_dir.join("lb-ebpf.o")).expect("copy the eBPF object into OUT_DIR");
}
