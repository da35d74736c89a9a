//! Attachments pinned in bpffs, so that the programs stay on the interface when the daemon
//! dies (a crash, `kill -9`, an upgrade): enforcement and counting go on with no gap, and
//! the next daemon swaps its programs into the same links atomically (`bpf_link_update`)
//! instead of detaching and attaching again.
//!
//! Pins live under `<pin dir>/links/<interface>/`: `xdp-native` or `xdp-generic` (the name
//! records the mode, as bpffs holds no other files), `tc-egress`, `tc-ingress` (the
//! LAN's fail-fast answers, where they go out by TC) and `tc-ingress-nat` (the LAN's NAT
//! hand-over, on a gateway that translates addresses).

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::{
    SchedClassifier, Xdp,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use super::XdpAttachMode;

/// Error type of the pinning steps: what failed, with the kernel's reason.
pub type PinError = Box<dyn std::error::Error + Send + Sync>;

/// Where one interface's links are pinned.
pub struct LinkPins {
    dir: PathBuf,
}

impl LinkPins {
    pub fn new(pin_dir: &Path, iface: &str) -> Self {
        Self {
            dir: pin_dir.join("links").join(iface),
        }
    }

    fn xdp_path(&self, mode: XdpAttachMode) -> PathBuf {
        self.dir.join(format!("xdp-{mode}"))
    }

    fn tc_path(&self, hook: TcHook) -> PathBuf {
        self.dir.join(match hook {
            TcHook::Egress => "tc-egress",
            TcHook::Ingress => "tc-ingress",
            TcHook::NatIngress => "tc-ingress-nat",
        })
    }

    /// The XDP link a previous daemon left attached, and its mode.
    pub fn existing_xdp(&self) -> Option<(PathBuf, XdpAttachMode)> {
        [XdpAttachMode::Native, XdpAttachMode::Generic]
            .into_iter()
            .map(|mode| (self.xdp_path(mode), mode))
            .find(|(path, _)| path.exists())
    }

    /// The TC link on `hook` a previous daemon left attached.
    pub fn existing_tc(&self, hook: TcHook) -> Option<PathBuf> {
        Some(self.tc_path(hook)).filter(|path| path.exists())
    }

    /// Pins a freshly attached XDP link.
    pub fn pin_xdp(&self, link: XdpLink, mode: XdpAttachMode) -> Result<PinnedLink, PinError> {
        std::fs::create_dir_all(&self.dir)?;
        let link = FdLink::try_from(link).map_err(|e| {
            format!("XDP was attached without a BPF link (kernel before 5.9?): {e}")
        })?;
        Ok(link.pin(self.xdp_path(mode))?)
    }

    /// Pins a freshly attached TC link.
    pub fn pin_tc(&self, link: SchedClassifierLink, hook: TcHook) -> Result<PinnedLink, PinError> {
        std::fs::create_dir_all(&self.dir)?;
        let link = FdLink::try_from(link)
            .map_err(|e| format!("TC was attached without a TCX link (kernel before 6.6?): {e}"))?;
        Ok(link.pin(self.tc_path(hook))?)
    }

    /// Removes the (now empty) directories of these pins.
    pub fn remove_dirs(&self) -> io::Result<()> {
        remove_dir_if_there(&self.dir)?;
        match self.dir.parent() {
            Some(links) => remove_dir_if_empty(links),
            None => Ok(()),
        }
    }
}

/// Which side of an interface a TC program is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    Egress,
    Ingress,
    /// Ingress too, the NAT hand-over's own link (first in the chain).
    NatIngress,
}

impl TcHook {
    pub fn attach_type(self) -> aya::programs::TcAttachType {
        match self {
            TcHook::Egress => aya::programs::TcAttachType::Egress,
            TcHook::Ingress | TcHook::NatIngress => aya::programs::TcAttachType::Ingress,
        }
    }
}

impl std::fmt::Display for TcHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcHook::Egress => "TC egress",
            TcHook::Ingress => "TC ingress",
            TcHook::NatIngress => "TC ingress (NAT hand-over)",
        })
    }
}

/// Puts `program` into the XDP link pinned at `path`, replacing the program there in one
/// step; returns the pin, kept so a clean shutdown can remove it.
pub fn adopt_xdp(program: &mut Xdp, path: &Path) -> Result<PinnedLink, PinError> {
    let link = XdpLink::try_from(FdLink::from(PinnedLink::from_pin(path)?))?;
    program.attach_to_link(link)?;
    Ok(PinnedLink::from_pin(path)?)
}

/// [`adopt_xdp`] for a TC link.
pub fn adopt_tc(program: &mut SchedClassifier, path: &Path) -> Result<PinnedLink, PinError> {
    let link = SchedClassifierLink::try_from(FdLink::from(PinnedLink::from_pin(path)?))?;
    program.attach_to_link(link)?;
    Ok(PinnedLink::from_pin(path)?)
}

/// Unpins `link` and closes it: with no pin and no descriptor left, the kernel detaches
/// the program.
pub fn release(link: PinnedLink) -> io::Result<()> {
    let fd_link = link.unpin()?;
    drop(fd_link);
    Ok(())
}

fn remove_dir_if_there(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_dir_if_empty(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.kind() == io::ErrorKind::DirectoryNotEmpty =>
        {
            Ok(())
        }
        other => other,
    }
}
