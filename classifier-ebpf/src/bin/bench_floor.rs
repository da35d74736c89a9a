//! `floor_flow_count`: the least an XDP flow counter can do, the floor against which the
//! classifier's established-flow fast path is measured (`datapath-bench`): parse Ethernet,
//! IPv4 or IPv6 and the TCP or UDP ports, look the 5-tuple up in an LRU hash (inserting it
//! when new), add the packet and its bytes. No VLANs, options, fragments, classification,
//! policy or shaping.
//!
//! Beside it, `empty_xdp` and `empty_tc`: programs that pass every packet, attached by the
//! throughput benchmark at the hooks the classifier uses (XDP on the LAN ingress, TC on both
//! egresses), a baseline that carries the hooks' own cost and none of ours.
//!
//! Only for the benchmarks; the product never loads this object.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// `atomic_xadd`: BPF has no compare-and-swap for core's atomics (see `add`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_PIPE, xdp_action::XDP_PASS},
    btf_maps::LruHashMap,
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// The 5-tuple, both addresses 16 bytes (IPv4 mapped), as the classifier keys its flows.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Counters {
    packets: u64,
    bytes: u64,
}

#[btf_map]
static FLOOR_FLOWS: LruHashMap<Key, Counters, 1024> = LruHashMap::new();

#[xdp]
pub fn floor_flow_count(ctx: XdpContext) -> u32 {
    if let Some(key) = key_of(&ctx) {
        count(&key, (ctx.data_end() - ctx.data()) as u64);
    }
    XDP_PASS
}

/// Passes every frame: the XDP hook's own cost.
#[xdp]
pub fn empty_xdp(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Passes every packet on (`TC_ACT_PIPE`, as the classifier does): the TC egress hook's own cost.
#[classifier]
pub fn empty_tc(_ctx: TcContext) -> i32 {
    TC_ACT_PIPE
}

/// `N` bytes at `offset`, if the frame has them.
#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let at = ctx.data() + offset;
    if at + N > ctx.data_end() {
        return None;
    }
    // SAFETY: inside the frame (checked above); [u8; N] has alignment 1.
    Some(unsafe { *(at as *const [u8; N]) })
}

#[inline(always)]
fn key_of(ctx: &XdpContext) -> Option<Key> {
    let [hi, lo] = read::<2>(ctx, 12)?;
    let mut key = Key {
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        protocol: 0,
        pad: [0; 3],
    };
    let l4 = match u16::from_be_bytes([hi, lo]) {
        0x0800 => {
            let ip = read::<20>(ctx, 14)?;
            key.protocol = ip[9];
            key.src[10..12].copy_from_slice(&[0xff, 0xff]);
            key.src[12..].copy_from_slice(&ip[12..16]);
            key.dst[10..12].copy_from_slice(&[0xff, 0xff]);
            key.dst[12..].copy_from_slice(&ip[16..20]);
            14 + ((ip[0] & 0x0f) as usize) * 4
        }
        0x86dd => {
            let ip = read::<40>(ctx, 14)?;
            key.protocol = ip[6];
            key.src.copy_from_slice(&ip[8..24]);
            key.dst.copy_from_slice(&ip[24..40]);
            14 + 40
        }
        _ => return None,
    };
    if key.protocol == 6 || key.protocol == 17 {
        // The bound lets the verifier follow a read at an offset taken from the header.
        if l4 > 128 {
            return None;
        }
        let ports = read::<4>(ctx, l4)?;
        key.src_port = u16::from_be_bytes([ports[0], ports[1]]);
        key.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    }
    Some(key)
}

/// An atomic add, as the classifier's counters (`classifier-ebpf/src/atomic.rs`).
///
/// # Safety
/// `counter` must be a live map value's 8-byte aligned field.
#[inline(always)]
unsafe fn add(counter: *mut u64, value: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: forwarded from the caller.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, value,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: forwarded from the caller.
    unsafe {
        *counter += value;
    }
}

#[inline(always)]
fn count(key: &Key, bytes: u64) {
    if let Some(counters) = FLOOR_FLOWS.get_ptr_mut(key) {
        // SAFETY: the map value, live for the program run; counted atomically as the
        // classifier counts (another CPU may count the same flow).
        unsafe {
            add(&raw mut (*counters).packets, 1);
            add(&raw mut (*counters).bytes, bytes);
        }
        return;
    }
    let _ = FLOOR_FLOWS.insert(key, Counters { packets: 1, bytes }, BPF_NOEXIST as u64);
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
        "bench-floor is a BPF object, built for bpfel-unknown-none by classifier-lab's build script"
    );
}
