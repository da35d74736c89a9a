//! The one recipe for the BPF objects, shared by the build scripts of the crates that embed
//! them: `classifier-user` (the datapath, what ships) and `classifier-lab` (the lab's and the
//! benchmarks' objects, which do not). A build script calls [`embed`] with the binaries of
//! `classifier-ebpf` it wants; they are left in `OUT_DIR` as `<name>.o` for
//! `include_bytes_aligned!`.
//!
//! The BPF target needs a `core` built for it, which rustup cannot provide on these
//! machines; Debian's packaged rustc ships one (`libstd-rust-web-dev-bpf`). So the objects are
//! built by a nested `cargo` from Debian (`/usr/bin/cargo`, `/usr/bin/rustc`), linked by
//! `bpf-linker`, in their own target directory (`target/bpf`, shared: cargo's lock there
//! makes two build scripts wait for each other). `cargo xtask setup` installs all three.
//! See ../docs/toolchain.md.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const BPF_TARGET: &str = "bpfel-unknown-none";
const BPF_PROFILE: &str = "bpf";
const BPF_CRATE: &str = "classifier-ebpf";

/// Builds `objects` (binaries of `classifier-ebpf`) and copies each to `OUT_DIR/<name>.o`.
/// Call it from a build script of a crate in the workspace's top directory; it prints the
/// `rerun-if` lines and stops the build with the fix when a tool is missing or the build fails.
pub fn embed(objects: &[&str]) {
    embed_variant(objects, None);
}

/// The cargo feature of `classifier-ebpf` that makes its build for kernels 5.15 to 5.18.
pub const LEGACY_FEATURE: &str = "legacy-kernel";

/// [`embed`] for the legacy build (feature [`LEGACY_FEATURE`]): each object is left as
/// `OUT_DIR/<name>-legacy.o`. Call it after [`embed`] when a crate carries both builds: the
/// two share the target directory, where cargo keeps each feature set's build apart.
pub fn embed_legacy(objects: &[&str]) {
    embed_variant(objects, Some(LEGACY_FEATURE));
}

fn embed_variant(objects: &[&str], feature: Option<&str>) {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("the calling crate lives in the workspace")
        .to_owned();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    for input in [
        "classifier-ebpf/src",
        "classifier-ebpf/Cargo.toml",
        "classifier-common/src",
        "classifier-common/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            workspace.join(input).display()
        );
    }
    println!("cargo::rerun-if-env-changed=CLASSIFIER_BPF_CARGO");
    println!("cargo::rerun-if-env-changed=CLASSIFIER_BPF_RUSTC");

    let cargo = tool_path("CLASSIFIER_BPF_CARGO", "/usr/bin/cargo");
    let rustc = tool_path("CLASSIFIER_BPF_RUSTC", "/usr/bin/rustc");
    let target_dir = workspace.join("target").join("bpf");
    build_objects(&cargo, &rustc, &workspace, &target_dir, objects, feature);

    let built = target_dir.join(BPF_TARGET).join(BPF_PROFILE);
    let suffix = if feature.is_some() { "-legacy" } else { "" };
    for object in objects {
        let (built, embedded) = (
            built.join(object),
            out_dir.join(format!("{object}{suffix}.o")),
        );
        std::fs::copy(&built, &embedded).unwrap_or_else(|e| {
            panic!("copying {} to {}: {e}", built.display(), embedded.display())
        });
    }
}

/// The tool at `$var`, or at `default`; stops the build with the fix when it is missing.
fn tool_path(var: &str, default: &str) -> PathBuf {
    let path = env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.exists() {
        panic!(
            "{} not found: the BPF object is built with Debian's Rust toolchain. \
             Run `cargo xtask setup` (as root) to install it, or set {var}.",
            path.display()
        );
    }
    path
}

fn build_objects(
    cargo: &Path,
    rustc: &Path,
    workspace: &Path,
    target_dir: &Path,
    objects: &[&str],
    feature: Option<&str>,
) {
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--package", BPF_CRATE, "--target", BPF_TARGET])
        .args(["--profile", BPF_PROFILE, "--target-dir"])
        .arg(target_dir)
        .args(objects.iter().flat_map(|object| ["--bin", *object]))
        .args(feature.iter().flat_map(|feature| ["--features", *feature]))
        // This script runs inside another cargo whose environment (RUSTC, RUSTFLAGS,
        // clippy's RUSTC_WORKSPACE_WRAPPER, CARGO_TARGET_DIR, ...) must not leak into the
        // nested build: start from a clean one.
        .env_clear()
        .envs(env::vars_os().filter(|(name, _)| {
            matches!(
                name.to_str(),
                Some("PATH" | "HOME" | "CARGO_HOME" | "TMPDIR" | "http_proxy" | "https_proxy")
            )
        }))
        .env("RUSTC", rustc)
        // aya-ebpf uses #![feature(...)]; Debian's stable rustc accepts it with this.
        .env("RUSTC_BOOTSTRAP", "1")
        // Keep BTF: BTF-defined maps need it, and it makes `bpftool map dump` readable.
        // BPF ISA v2 (kernel 4.14+): `x < K` as one jump with an immediate; v1 loads K into a
        // register first, and 6.1's verifier cannot predict such a jump, so it walks dead
        // branches with impossible bounds and refuses them (docs/verifier-notes.md).
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\u{1f}-Clink-arg=--btf\u{1f}-Clink-arg=--disable-expand-memcpy-in-order\u{1f}-Ctarget-cpu=v2",
        );
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", cargo.display()));
    if !status.success() {
        panic!(
            "building the BPF objects {objects:?} failed ({status}); the compiler's messages are above. \
             Verifier-independent errors such as \"BPF stack limit is exceeded\" come from \
             LLVM; see docs/verifier-notes.md."
        );
    }
}
