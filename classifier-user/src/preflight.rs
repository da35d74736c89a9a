//! Checks run before touching the kernel, so that a start that cannot work fails at once
//! with one line naming the cause and the fix, and leaves nothing behind.

use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};

use crate::kernel_features::{
    self, DatapathBuild, DatapathChoice, Missing, Probed, Since, TcAttachChoice, TcAttachMode,
};
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
        "`classifier {command}` lacks {}: it loads BPF programs and changes interfaces. \
         Run it as root (sudo), as the systemd unit (it grants them), or with these \
         capabilities (e.g. `setpriv --inh-caps=+{caps} --ambient-caps=+{caps}`)",
        missing.join(", "),
        caps = missing.iter().map(|c| c.trim_start_matches("CAP_").to_lowercase())
            .collect::<Vec<_>>().join(",+")
    )]
    MissingCapabilities {
        command: &'static str,
        missing: Vec<String>,
    },
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
    #[error(
        "kernel {release} lacks {}: the datapath cannot load; it needs kernel {minimum} or \
         later (`classifier preflight` lists every feature; the README's \"Kernels\" says \
         which distribution kernels have them)",
        missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    KernelLacks {
        release: String,
        missing: Vec<Missing>,
        minimum: Since,
    },
    #[error(
        "kernel {release} lacks TCX (needs {}+), which --tc-attach tcx asks for: use \
         --tc-attach auto or netlink (clsact filters)",
        kernel_features::TCX
    )]
    NoTcx { release: String },
    #[error("probing the kernel's BPF features: {0:#}")]
    Probe(anyhow::Error),
}

/// What `classifier run` needs, and why each.
pub const RUN_CAPABILITIES: [Capability; 3] = [
    // bpf(2): load the programs, create and pin the maps, read them.
    Capability::CAP_BPF,
    // Attach XDP and TC, and the HTB qdiscs and classes of shaping (netlink).
    Capability::CAP_NET_ADMIN,
    // Without it the verifier refuses the XDP program: "pointer arithmetic with it
    // prohibited for !root" (CAP_PERFMON is what it takes for root there).
    Capability::CAP_PERFMON,
];

/// Entering a network namespace (`--netns`, the lab) takes CAP_SYS_ADMIN, on top.
pub const NETNS_CAPABILITY: Capability = Capability::CAP_SYS_ADMIN;

/// Fails unless the process holds each of `needed` in its effective set: root has them
/// all, the systemd unit grants exactly these, and so can `setpriv` or `capsh`. A uid
/// check would refuse the unit's capability-only service and accept a root without them
/// (inside a container, say).
pub fn require_capabilities(
    command: &'static str,
    needed: &[Capability],
) -> Result<(), PreflightError> {
    let missing: Vec<String> = needed
        .iter()
        .filter(|&&cap| !caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities { command, missing })
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

/// Every feature the BPF `object` (the datapath's) uses (helpers, map types, BTF) and TCX,
/// each present or not.
fn probe_kernel(object: &[u8]) -> anyhow::Result<Vec<Probed>> {
    let needs = kernel_features::needs(object)?;
    kernel_features::probe(&needs, require_kernel_btf().is_ok())
}

/// A build of the BPF programs and what this kernel has of the features it uses.
#[derive(Debug)]
pub struct ChosenBuild {
    pub build: DatapathBuild,
    pub features: Vec<Probed>,
}

impl ChosenBuild {
    /// Fails unless the kernel has every feature the build requires, naming each missing
    /// one and the kernel that brought it.
    pub fn require_features(&self) -> Result<(), PreflightError> {
        let missing = kernel_features::missing(&self.features);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(PreflightError::KernelLacks {
                release: kernel_features::release(),
                minimum: kernel_features::minimum_kernel(&self.features),
                missing,
            })
        }
    }
}

/// The build of the BPF programs `choice` means on this kernel, with the probe of its
/// features: `auto` takes the modern build where the kernel has every feature it uses, and
/// the legacy one where not. `object_of` gives each build's BPF object. Whether the
/// kernel's verifier takes the build is known only by loading it
/// (`loader::load_falling_back`).
pub fn datapath_build(
    choice: DatapathChoice,
    object_of: fn(DatapathBuild) -> &'static [u8],
) -> Result<ChosenBuild, PreflightError> {
    let probe = |build| {
        let features = probe_kernel(object_of(build)).map_err(PreflightError::Probe)?;
        Ok(ChosenBuild { build, features })
    };
    match choice {
        DatapathChoice::Modern => probe(DatapathBuild::Modern),
        DatapathChoice::Legacy => probe(DatapathBuild::Legacy),
        DatapathChoice::Auto => {
            let modern = probe(DatapathBuild::Modern)?;
            if kernel_features::missing(&modern.features).is_empty() {
                Ok(modern)
            } else {
                probe(DatapathBuild::Legacy)
            }
        }
    }
}

/// How TC programs get attached for `--tc-attach`: TCX links where the kernel has them,
/// clsact filters (netlink) where not or when asked.
pub fn tc_attach_mode(choice: TcAttachChoice) -> Result<TcAttachMode, PreflightError> {
    let has_tcx = kernel_features::has_tcx() && !kernel_features::tcx_pretended_missing();
    match choice {
        TcAttachChoice::Netlink => Ok(TcAttachMode::Netlink),
        TcAttachChoice::Tcx if has_tcx => Ok(TcAttachMode::Tcx),
        TcAttachChoice::Tcx => Err(PreflightError::NoTcx {
            release: kernel_features::release(),
        }),
        TcAttachChoice::Auto if has_tcx => Ok(TcAttachMode::Tcx),
        TcAttachChoice::Auto => Ok(TcAttachMode::Netlink),
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
    fn missing_capabilities_are_named_with_the_setpriv_fix() {
        let err = PreflightError::MissingCapabilities {
            command: "run",
            missing: vec!["CAP_BPF".into(), "CAP_PERFMON".into()],
        };
        assert_eq!(
            err.to_string(),
            "`classifier run` lacks CAP_BPF, CAP_PERFMON: it loads BPF programs and changes \
             interfaces. Run it as root (sudo), as the systemd unit (it grants them), or with \
             these capabilities (e.g. `setpriv --inh-caps=+bpf,+perfmon \
             --ambient-caps=+bpf,+perfmon`)"
        );
    }

    #[test]
    fn a_kernel_without_features_is_told_each_and_the_minimum() {
        let err = PreflightError::KernelLacks {
            release: "5.15.0-91-generic".into(),
            missing: vec![
                Missing {
                    name: "bpf_loop".into(),
                    since: Since(5, 17),
                },
                Missing {
                    name: "bpf_dynptr_read".into(),
                    since: Since(5, 19),
                },
            ],
            minimum: Since(5, 19),
        };
        assert!(
            err.to_string().starts_with(
                "kernel 5.15.0-91-generic lacks bpf_loop (needs 5.17+), bpf_dynptr_read \
                 (needs 5.19+): the datapath cannot load; it needs kernel 5.19 or later"
            ),
            "{err}"
        );
    }

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
