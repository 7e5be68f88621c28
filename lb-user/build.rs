//! Builds the XDP object on every relevant change, so the binary and the
//! tests never embed a stale one; the agent's decapsulation object too,
//! for the benchmark of its paths.
fn main() {
    ebpf_build::build_for_build_script(&[
        (|objects| &objects.lb, "lb-ebpf.o"),
        (|objects| &objects.decap, "agent-decap.o"),
    ]);
}
