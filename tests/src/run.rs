//! Running the datapath's programs on frames with `BPF_PROG_TEST_RUN`.

use aya::{TestRunOptions, programs::TestRun as _};
use classifier_user::loader::{Datapath, program};

use crate::frames::Way;

/// XDP_PASS: the frame continues into the stack.
pub const XDP_PASS: u32 = 2;
/// TC_ACT_PIPE: on to the next program / the default action.
pub const TC_ACT_PIPE: u32 = 3;

/// Runs the program for `way` (XDP for uploads, TC for downloads) once on `frame` and
/// returns its verdict.
pub fn run_frame(datapath: &mut Datapath, way: Way, frame: &[u8]) -> u32 {
    try_run_frame(datapath, way, frame)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN ({way:?}) failed on {frame:02x?}: {e:?}"))
}

/// [`run_frame`], returning the kernel's refusal instead of panicking. The skb test harness
/// (TC) refuses frames whose IP header is incomplete with EINVAL: such a frame never reaches
/// TC egress for real, the IP stack drops it first.
pub fn try_run_frame(
    datapath: &mut Datapath,
    way: Way,
    frame: &[u8],
) -> Result<u32, aya::programs::ProgramError> {
    let options = TestRunOptions {
        data_in: Some(frame),
        repeat: 1,
        ..Default::default()
    };
    let result = match way {
        Way::Up => datapath
            .xdp(program::LAN_INGRESS)
            .unwrap()
            .test_run(options),
        Way::Down => datapath.tc(program::LAN_EGRESS).unwrap().test_run(options),
    };
    result.map(|r| r.return_value)
}

/// XDP_TX: the frame (rewritten) goes back out of the interface it came in on.
pub const XDP_TX: u32 = 3;

/// Runs the XDP program of LAN ingress on `frame` and returns its verdict and the frame as
/// the program left it.
pub fn run_upload_out(datapath: &mut Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let result = datapath
        .xdp(program::LAN_INGRESS)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed on {frame:02x?}: {e:?}"));
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// Average nanoseconds per run of the XDP program `name` over `repeat` runs on `frame`,
/// as the kernel measures it.
pub fn xdp_ns_per_run(datapath: &mut Datapath, name: &str, frame: &[u8], repeat: u32) -> f64 {
    let result = datapath
        .xdp(name)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name} failed: {e:?}"));
    result.duration.as_nanos() as f64
}

/// `offsetof(struct __sk_buff, priority)`.
const SKB_PRIORITY_OFFSET: usize = 32;
/// `sizeof(struct __sk_buff)` on this kernel's UAPI.
const SKB_CTX_SIZE: usize = 192;

/// Runs the TC program `name` once on `frame`; returns its verdict and the skb's
/// `priority` as the program left it (how shaping picks an HTB class).
pub fn run_tc_priority(datapath: &mut Datapath, name: &str, frame: &[u8]) -> (u32, u32) {
    let mut ctx = vec![0u8; SKB_CTX_SIZE];
    let result = datapath
        .tc(name)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_out: Some(&mut ctx),
            repeat: 1,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name} failed: {e:?}"));
    let priority = u32::from_ne_bytes(
        ctx[SKB_PRIORITY_OFFSET..SKB_PRIORITY_OFFSET + 4]
            .try_into()
            .unwrap(),
    );
    (result.return_value, priority)
}
