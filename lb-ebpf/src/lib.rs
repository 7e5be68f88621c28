//! What the two eBPF programs of this crate share: the LB's XDP program
//! (`main.rs`) and the agent's decapsulation program (`bin/agent-decap.rs`).
#![no_std]

/// Turns each row of a map table (`lb_common::program_maps!`,
/// `lb_common::decap_maps!`) into a `#[btf_map]` static; the caller
/// imports the `aya_ebpf::btf_maps` kinds it uses and `btf_map`.
#[macro_export]
macro_rules! declare_maps {
    ($( $(#[$doc:meta])* $name:ident / $field:ident : $kind:ident <$($ty:ty),+> [$cap:expr]; )*) => {
        $(
            $(#[$doc])*
            #[btf_map]
            pub static $name: $kind<$($ty,)+ { ($cap) as usize }> = $kind::new();
        )*
    };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
