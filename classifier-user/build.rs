//! Builds the datapath's BPF object (`classifier-ebpf`) into `OUT_DIR` for
//! `include_bytes_aligned!` (`loader::EBPF_OBJECT`): the only BPF object the product carries.
//! The recipe is `bpf-build`'s (../docs/toolchain.md).

fn main() {
    bpf_build::embed(&["classifier-ebpf"]);
}
