//! Running the datapath's programs on frames with `BPF_PROG_TEST_RUN`.

use aya::{TestRunOptions, programs::TestRun as _};
use classifier_common::programs::{self, ProgramDef, Tc, Xdp};
use classifier_user::loader::Datapath;

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
            .program(programs::LAN_INGRESS)
            .unwrap()
            .test_run(options),
        Way::Down => datapath
            .program(programs::LAN_EGRESS)
            .unwrap()
            .test_run(options),
    };
    result.map(|r| r.return_value)
}

/// XDP_TX: the frame (rewritten) goes back out of the interface it came in on.
pub const XDP_TX: u32 = 3;

/// `sizeof(struct xdp_md)`: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex.
const XDP_MD_SIZE: usize = 24;

/// A frame as the XDP program of LAN ingress left it, with the metadata it put in front.
pub struct XdpOutcome {
    pub action: u32,
    /// The XDP metadata in front of the frame (empty when the program wrote none).
    pub metadata: Vec<u8>,
    pub frame: Vec<u8>,
}

/// Runs the XDP program of LAN ingress on `frame`; returns its verdict, and the frame and
/// its metadata as the program left them (the kernel reports the metadata's length in
/// the context's `data`, the frame's start past it).
pub fn run_upload_outcome(datapath: &mut Datapath, frame: &[u8]) -> XdpOutcome {
    let mut out = vec![0u8; frame.len() + 256];
    let mut ctx_in = [0u8; XDP_MD_SIZE];
    // data = 0, data_end = the frame's length: the kernel insists on it when given a context.
    ctx_in[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    let mut ctx_out = [0u8; XDP_MD_SIZE];
    let result = datapath
        .program(programs::LAN_INGRESS)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed on {frame:02x?}: {e:?}"));
    out.truncate(result.data_size_out as usize);
    let metadata_len = u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap()) as usize;
    let frame = out.split_off(metadata_len);
    XdpOutcome {
        action: result.return_value,
        metadata: out,
        frame,
    }
}

/// Average nanoseconds per run of the XDP program `program` over `repeat` runs on `frame`,
/// as the kernel measures it.
pub fn xdp_ns_per_run(
    datapath: &mut Datapath,
    program: ProgramDef<Xdp>,
    frame: &[u8],
    repeat: u32,
) -> f64 {
    let name = program.name();
    let result = datapath
        .program(program)
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

/// Runs the TC program `program` once on `frame`; returns its verdict and the skb's
/// `priority` as the program left it (how shaping picks an HTB class).
pub fn run_tc_priority(
    datapath: &mut Datapath,
    program: ProgramDef<Tc>,
    frame: &[u8],
) -> (u32, u32) {
    let name = program.name();
    let mut ctx = vec![0u8; SKB_CTX_SIZE];
    let result = datapath
        .program(program)
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

/// `offsetof(struct __sk_buff, mark)`.
const SKB_MARK_OFFSET: usize = 8;
/// `offsetof(struct __sk_buff, ingress_ifindex)`.
const SKB_INGRESS_IFINDEX_OFFSET: usize = 36;
/// `offsetof(struct __sk_buff, ifindex)`.
const SKB_IFINDEX_OFFSET: usize = 40;
/// The loopback interface's index: the device `BPF_PROG_TEST_RUN` gives the skb.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Runs the TC program `program` once on `frame` given an skb `mark` that arrived on
/// `ingress_ifindex` and leaves by the loopback interface; returns its verdict and the
/// skb's mark as the program left it.
pub fn run_tc_marked(
    datapath: &mut Datapath,
    program: ProgramDef<Tc>,
    frame: &[u8],
    mark: u32,
    ingress_ifindex: u32,
) -> (u32, u32) {
    let name = program.name();
    let mut ctx_in = vec![0u8; SKB_CTX_SIZE];
    let mut put = |offset: usize, value: u32| {
        ctx_in[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    };
    put(SKB_MARK_OFFSET, mark);
    put(SKB_INGRESS_IFINDEX_OFFSET, ingress_ifindex);
    put(SKB_IFINDEX_OFFSET, LOOPBACK_IFINDEX);
    let mut ctx_out = vec![0u8; SKB_CTX_SIZE];
    let result = datapath
        .program(program)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name} failed: {e:?}"));
    let mark = u32::from_ne_bytes(
        ctx_out[SKB_MARK_OFFSET..SKB_MARK_OFFSET + 4]
            .try_into()
            .unwrap(),
    );
    (result.return_value, mark)
}
