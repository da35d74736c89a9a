//! Checks run before touching the kernel, so that a start that cannot work fails at once
//! with one line naming the cause and the fix, and leaves nothing behind.

use std::path::{Path, PathBuf};

use nix::sys::statfs::{FsType, statfs};

/// Where the kernel exposes its own BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Overrides [`KERNEL_BTF`]; lets tests exercise the "no BTF" error on a kernel that has it.
pub const KERNEL_BTF_ENV: &str = "CLASSIFIER_KERNEL_BTF";
/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: FsType = FsType(0xcafe_4a11);

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "`classifier {command}` must run as root (it loads BPF programs and changes \
         interfaces): run it with sudo"
    )]
    NotRoot { command: &'static str },
    #[error(
        "kernel BTF not found at {}: this kernel was built without CONFIG_DEBUG_INFO_BTF; \
         use a kernel that has it (Debian and Ubuntu kernels since 5.8 do)",
        path.display()
    )]
    NoKernelBtf { path: PathBuf },
    #[error(
        "{} is not on a BPF filesystem: mount one with `mount -t bpf bpf /sys/fs/bpf` \
         (or run `cargo xtask setup`), or pass --pin-dir under a bpffs mount",
        path.display()
    )]
    NotOnBpfFs { path: PathBuf },
    #[error("interface `{name}` not found{where_}: check the name with `ip link show`")]
    NoInterface { name: String, where_: String },
}

/// Fails unless the process runs as root.
pub fn require_root(command: &'static str) -> Result<(), PreflightError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(PreflightError::NotRoot { command })
    }
}

/// Fails unless the kernel publishes its BTF (the datapath's maps are BTF-defined).
pub fn require_kernel_btf() -> Result<(), PreflightError> {
    let path = std::env::var_os(KERNEL_BTF_ENV).map_or_else(|| KERNEL_BTF.into(), PathBuf::from);
    if path.exists() {
        Ok(())
    } else {
        Err(PreflightError::NoKernelBtf { path })
    }
}

/// Fails unless `pin_dir` is, or would be created, on a BPF filesystem.
pub fn require_bpffs(pin_dir: &Path) -> Result<(), PreflightError> {
    let not_on_bpffs = || PreflightError::NotOnBpfFs {
        path: pin_dir.to_owned(),
    };
    let existing = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .ok_or_else(not_on_bpffs)?;
    match statfs(existing) {
        Ok(fs) if fs.filesystem_type() == BPF_FS_MAGIC => Ok(()),
        _ => Err(not_on_bpffs()),
    }
}

/// The interface's index, or an error naming it (and the namespace looked in).
pub fn require_interface(name: &str, netns: Option<&str>) -> Result<u32, PreflightError> {
    let missing = || PreflightError::NoInterface {
        name: name.to_owned(),
        where_: netns.map_or_else(String::new, |ns| format!(" in network namespace `{ns}`")),
    };
    nix::net::if_::if_nametoindex(name).map_err(|_| missing())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_is_not_bpffs() {
        let err = require_bpffs(Path::new("/tmp/classifier-test-pins")).unwrap_err();
        assert!(
            err.to_string().contains("mount -t bpf bpf /sys/fs/bpf"),
            "{err}"
        );
    }

    #[test]
    fn missing_interface_names_itself_and_the_namespace() {
        let err = require_interface("nosuch0", Some("lab-gw")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface `nosuch0` not found in network namespace `lab-gw`: check the name with \
             `ip link show`"
        );
    }
}
