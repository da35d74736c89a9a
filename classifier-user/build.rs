//! Builds the datapath's BPF object (`classifier-ebpf`) into `OUT_DIR` for
//! `include_bytes_aligned!` (`loader::EBPF_OBJECT`), twice: the modern build, and the legacy
//! one for kernels 5.15 to 5.18 (`loader::EBPF_OBJECT_LEGACY`, ../docs/kernels.md); the
//! loader picks one at start. The recipe is `bpf-build`'s (../docs/toolchain.md).

fn main() {
    bpf_build::embed(&["classifier-ebpf"]);
    bpf_build::embed_legacy(&["classifier-ebpf"]);
}
