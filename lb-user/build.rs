//! Builds the XDP object on every relevant change, so the binary and the
//! tests never embed a stale one.
fn main() {
    ebpf_build::build_for_build_script(|objects| objects.lb, "lb-ebpf.o");
}
