//! Builds the decapsulation program on every relevant change, so the agent
//! never embeds a stale one.
fn main() {
    ebpf_build::build_for_build_script(&[(|objects| &objects.decap, "agent-decap.o")]);
}
