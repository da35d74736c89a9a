//! Builds the BPF objects only the lab and the benchmarks load into `OUT_DIR`: the switch
//! port's pass-through XDP program (`xdp_tx`) and the benchmark's floor. The recipe is
//! `bpf-build`'s, the same as the product's (../docs/toolchain.md).

fn main() {
    bpf_build::embed(&["lab-xdp-pass", "bench-floor"]);
}
