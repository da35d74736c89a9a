//! Attachments pinned in bpffs, so that the programs stay on the interface when the daemon
//! dies (a crash, `kill -9`, an upgrade): enforcement and counting go on with no gap, and
//! the next daemon swaps its programs into the same links atomically (`bpf_link_update`)
//! instead of detaching and attaching again.
//!
//! Pins live under `<pin dir>/links/<interface>/`: `xdp-native` or `xdp-generic` (the name
//! records the mode, as bpffs holds no other files), `tc-egress`, `tc-ingress` (the
//! LAN's fail-fast answers, where they go out by TC) and `tc-ingress-nat` (the LAN's NAT
//! hand-over, on a gateway that translates addresses).
//!
//! Kernels before 6.6 have no TCX links: there TC programs are filters of a `clsact`
//! qdisc, made over netlink ([`TcAttachMode::Netlink`]). A filter holds its program in the
//! kernel without any descriptor of ours, so it outlives the daemon as a link does; what is
//! pinned is the program itself (`tc-egress-netlink`, `tc-ingress-netlink`,
//! `tc-ingress-nat-netlink`), which marks the filter as ours. Our filters have fixed
//! priorities and a fixed handle ([`TcHook::netlink_priority`], [`NETLINK_HANDLE`]), so the next daemon finds them without asking anyone and replaces
//! their program in place (a filter change is one RCU swap in the kernel: no packet goes
//! unfiltered). The empty directory `clsact-ours` records that a daemon created the
//! interface's clsact qdisc: a clean stop removes the qdisc then, and only if no filter of
//! anyone else's is left on it.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, SchedClassifier,
    links::{FdLink, Link as _, LinkError, PinnedLink},
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    xdp::XdpLink,
};
use tracing::{info, warn};

use super::XdpAttachMode;

/// Error type of the pinning steps: what failed, with the kernel's reason.
pub type PinError = Box<dyn std::error::Error + Send + Sync>;

/// Priority of our clsact filters: 2, ahead of filters other tools add (`tc` picks 49152
/// and up when not told), so that enforcement sees every packet first; the NAT hand-over
/// has 1, before the fail-fast answers' filter on the same hook (whose verdict ends the
/// hook's filters, as its TCX link comes last for the same reason).
pub const NETLINK_PRIORITY: u16 = 2;
/// Priority of the NAT hand-over's clsact filter (see [`NETLINK_PRIORITY`]).
pub const NAT_NETLINK_PRIORITY: u16 = 1;
/// Handle of our clsact filters ("c1a5"), one per hook: with the priority, what names them.
pub const NETLINK_HANDLE: u32 = 0xc1a5;

/// A TC attachment a previous daemon left, by how it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeftTc {
    /// A pinned TCX link.
    Tcx(PathBuf),
    /// Our clsact filter, its program pinned here.
    Netlink(PathBuf),
}

/// Where one interface's links are pinned.
#[derive(Clone)]
pub struct LinkPins {
    dir: PathBuf,
    iface: String,
}

impl LinkPins {
    pub fn new(pin_dir: &Path, iface: &str) -> Self {
        Self {
            dir: pin_dir.join("links").join(iface),
            iface: iface.to_owned(),
        }
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    fn netlink_path(&self, hook: TcHook) -> PathBuf {
        self.dir.join(match hook {
            TcHook::Egress => "tc-egress-netlink",
            TcHook::Ingress => "tc-ingress-netlink",
            TcHook::NatIngress => "tc-ingress-nat-netlink",
        })
    }

    /// The directory whose presence says a daemon created the interface's clsact qdisc.
    fn clsact_marker(&self) -> PathBuf {
        self.dir.join("clsact-ours")
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

    /// The TC attachment on `hook` a previous daemon left.
    pub fn existing_tc(&self, hook: TcHook) -> Option<LeftTc> {
        let tcx = self.tc_path(hook);
        let netlink = self.netlink_path(hook);
        if tcx.exists() {
            Some(LeftTc::Tcx(tcx))
        } else if netlink.exists() {
            Some(LeftTc::Netlink(netlink))
        } else {
            None
        }
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

    /// Attaches `program` on `hook` as our clsact filter, adding the clsact qdisc when the
    /// interface has none (and recording that we did), and pins the program.
    pub fn attach_netlink(
        &self,
        program: &mut SchedClassifier,
        hook: TcHook,
    ) -> Result<(), PinError> {
        std::fs::create_dir_all(&self.dir)?;
        match aya::programs::tc::qdisc_add_clsact(&self.iface) {
            Ok(()) => {
                std::fs::create_dir_all(self.clsact_marker())?;
                info!(interface = %self.iface, "added a clsact qdisc for the TC programs");
            }
            // EEXIST: the interface has one already (ours from before, or someone else's).
            Err(e) if error_is(&e, libc::EEXIST) => {}
            Err(e) => return Err(format!("adding a clsact qdisc: {e}").into()),
        }
        let id = program
            .attach_with_options(&self.iface, hook.attach_type(), hook.netlink_options())
            .map_err(|e| {
                if error_is(&e, libc::EEXIST) {
                    format!(
                        "a filter with our priority and handle is already there but not \
                         pinned as ours; remove it with `tc filter del dev {} {} pref {} \
                         handle {:#x} bpf` if it is a classifier's",
                        self.iface,
                        hook.clsact_side(),
                        hook.netlink_priority(),
                        NETLINK_HANDLE
                    )
                } else {
                    format!("adding the clsact filter: {e}")
                }
            })?;
        keep_filter(program.take_link(id)?);
        program.pin(self.netlink_path(hook))?;
        Ok(())
    }

    /// Puts `program` into the clsact filter a previous daemon left on `hook` (pinned at
    /// `pinned`), in place, and pins it instead of the previous program: true. When the
    /// filter is gone (removed by hand, or the qdisc with it), attaches afresh: false.
    pub fn adopt_netlink(
        &self,
        program: &mut SchedClassifier,
        hook: TcHook,
        pinned: &Path,
    ) -> Result<bool, PinError> {
        let ours = our_filter(&self.iface, hook)?;
        match program.attach_to_link(ours) {
            Ok(id) => keep_filter(program.take_link(id)?),
            Err(e) if error_is(&e, libc::ENOENT) || error_is(&e, libc::EINVAL) => {
                warn!(interface = %self.iface, hook = %hook, error = %e,
                      "the previous daemon's clsact filter is gone: attaching afresh");
                std::fs::remove_file(pinned)?;
                return self.attach_netlink(program, hook).map(|()| false);
            }
            Err(e) => return Err(Box::new(e)),
        }
        std::fs::remove_file(pinned)?;
        program.pin(pinned)?;
        Ok(true)
    }

    /// Takes our clsact filter off `hook` and unpins its program. A filter already gone
    /// (removed by hand) is not an error.
    pub fn detach_netlink(&self, hook: TcHook) -> Result<(), PinError> {
        let path = self.netlink_path(hook);
        if !path.exists() {
            return Ok(());
        }
        match our_filter(&self.iface, hook)?.detach() {
            Ok(()) => {}
            Err(e) if error_is(&e, libc::ENOENT) || error_is(&e, libc::EINVAL) => {}
            Err(e) => return Err(format!("removing the clsact filter on {hook}: {e}").into()),
        }
        std::fs::remove_file(&path)?;
        Ok(())
    }

    /// Removes the clsact qdisc if a daemon of ours created it and nobody else has a
    /// filter on it; forgets the record either way. Call once our filters are off.
    pub fn remove_clsact_if_ours(&self) -> Result<(), PinError> {
        let marker = self.clsact_marker();
        if !marker.exists() {
            return Ok(());
        }
        let ifindex = nix::net::if_::if_nametoindex(self.iface.as_str())?;
        let mut netlink = crate::netlink::Netlink::open()?;
        let mut others = Vec::new();
        for side in [TcHook::Ingress, TcHook::Egress] {
            others.extend(netlink.filters(ifindex, side.clsact_parent())?);
        }
        let is_clsact = netlink.qdiscs(ifindex)?.iter().any(|q| q.kind == "clsact");
        if !is_clsact {
            info!(interface = %self.iface, "our clsact qdisc is gone already");
        } else if others.is_empty() {
            netlink.delete_clsact(ifindex)?;
            info!(interface = %self.iface, "removed the clsact qdisc we added");
        } else {
            info!(interface = %self.iface, filters = others.len(),
                  "left the clsact qdisc we added in place: other filters were put on it");
        }
        std::fs::remove_dir(&marker)?;
        Ok(())
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

    /// `tc filter ... ingress|egress`.
    fn clsact_side(self) -> &'static str {
        match self {
            TcHook::Egress => "egress",
            TcHook::Ingress | TcHook::NatIngress => "ingress",
        }
    }

    /// The priority of our clsact filter on this hook.
    pub fn netlink_priority(self) -> u16 {
        match self {
            TcHook::NatIngress => NAT_NETLINK_PRIORITY,
            TcHook::Egress | TcHook::Ingress => NETLINK_PRIORITY,
        }
    }

    /// How our clsact filter on this hook is made: its priority and our handle, no class.
    pub fn netlink_options(self) -> TcAttachOptions {
        TcAttachOptions::Netlink(NlOptions {
            priority: self.netlink_priority(),
            handle: TcHandle::from(NETLINK_HANDLE),
            classid: None,
        })
    }

    /// The clsact hook's parent handle (`ffff:fff2`, `ffff:fff3`).
    fn clsact_parent(self) -> netlink_packet_route::tc::TcHandle {
        use netlink_packet_route::tc::TcHandle as Nl;
        Nl {
            major: 0xffff,
            minor: match self {
                TcHook::Egress => Nl::MIN_EGRESS,
                TcHook::Ingress | TcHook::NatIngress => Nl::MIN_INGRESS,
            },
        }
    }
}

/// Our clsact filter on `hook` of `iface`, as aya names one.
fn our_filter(iface: &str, hook: TcHook) -> io::Result<SchedClassifierLink> {
    SchedClassifierLink::attached(
        iface,
        hook.attach_type(),
        hook.netlink_priority(),
        TcHandle::from(NETLINK_HANDLE),
        None,
    )
}

/// Leaves a netlink filter in the kernel: aya's link detaches the filter when dropped, and
/// ours must outlive the daemon (the pinned program and the fixed priority and handle are
/// all the next daemon or a clean stop need). It holds no descriptor, so nothing leaks.
fn keep_filter(link: SchedClassifierLink) {
    std::mem::forget(link);
}

/// Whether `err` or one of its causes is the OS error `errno`.
fn error_is(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        let code = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .or_else(|| {
                e.downcast_ref::<aya::sys::NetlinkError>()
                    .and_then(aya::sys::NetlinkError::raw_os_error)
            });
        if code == Some(errno) {
            return true;
        }
        cause = e.source();
    }
    false
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

/// Puts a program into the link pinned at `path` (an XDP or TCX link, as `L`) with
/// `attach_to_link`, replacing the program there in one step; returns the pin, kept so a
/// clean shutdown can remove it.
pub fn adopt<L>(
    path: &Path,
    attach_to_link: impl FnOnce(L) -> Result<(), ProgramError>,
) -> Result<PinnedLink, PinError>
where
    L: TryFrom<FdLink, Error = LinkError>,
{
    let link = L::try_from(FdLink::from(PinnedLink::from_pin(path)?))?;
    attach_to_link(link)?;
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
