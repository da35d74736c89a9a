//! Makes the lab's LAN carry the frames the gateway sends back with XDP_TX (fail-fast
//! resets). A veth hands XDP_TX frames to its peer, and the peer only delivers them at once
//! when it runs an XDP program itself: without one the kernel queues them until unrelated
//! traffic flushes the queue (`veth_xdp_flush` skips peers without XDP), so a reset could
//! arrive seconds late or never. A physical NIC transmits XDP_TX frames itself; this is a
//! property of veths. The daemon sends its answers by TC on a veth unless told otherwise
//! (`--fail-fast-replies`), so it needs none of this: the lab keeps it for the XDP_TX way's
//! tests, and leaves it off for plain-veth tests ([`crate::LabSpec::xdp_pass_through`]).

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};

use classifier_user::netns;

/// The pass-through program (`classifier-ebpf/src/bin/lab_xdp_pass.rs`).
static XDP_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-xdp-pass.o"));

/// The pass-through program attached to one interface; detached when dropped.
pub struct PassThrough {
    _ebpf: Ebpf,
}

/// Attaches the pass-through XDP program (native mode) to `iface` in namespace `netns_name`.
pub fn deliver_xdp_tx_frames(netns_name: &str, iface: &str) -> anyhow::Result<PassThrough> {
    let iface = iface.to_owned();
    let ebpf = netns::run_in(netns_name, move || {
        let mut ebpf = Ebpf::load(XDP_PASS_OBJECT).context("loading the lab's xdp_pass")?;
        let program: &mut Xdp = ebpf
            .program_mut("xdp_pass")
            .context("xdp_pass is in its object")?
            .try_into()?;
        program.load().context("loading xdp_pass into the kernel")?;
        program
            .attach(&iface, XdpMode::Driver)
            .with_context(|| format!("attaching xdp_pass to {iface}"))?;
        Ok(ebpf)
    })
    .with_context(|| format!("in network namespace {netns_name}"))?;
    Ok(PassThrough { _ebpf: ebpf })
}
