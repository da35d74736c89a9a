//! `xdp_pass`: passes every frame. Only for the lab: a veth delivers the frames its peer
//! sends back with XDP_TX (the gateway's fail-fast resets) only when it has an XDP program
//! of its own; without one the kernel leaves them queued until other traffic happens to
//! flush them (`veth_xdp_flush` skips peers without XDP). The lab attaches this to the
//! switch port facing the gateway. A physical NIC needs none of it.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "lab-xdp-pass is a BPF object, built for bpfel-unknown-none by classifier-lab's build script"
    );
}
