//! The hand-over between classification programs: this CPU's [`ClassifyJob`], the flow it
//! is about, and the stream buffer holding the flow's first bytes.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    config::{ClassifyJob, StreamBuf, job_buffer, tail},
    flow::{FlowEntry, FlowKey},
    policy::verdict,
};

use crate::{
    flows::Flow,
    maps::{CLASSIFIERS, DEFRAG, JOBS, REASM, SCRATCH},
    packet::StreamView,
};

/// This CPU's job, its flow's entry and its stream buffer, all live for the program run.
pub struct Job<'run> {
    pub job: *mut ClassifyJob,
    pub entry: Flow<'run>,
    pub buf: *mut StreamBuf,
}

impl Job<'_> {
    /// The current job, if its flow and buffer still exist.
    #[inline(always)]
    pub fn current() -> Option<Self> {
        let job = JOBS.get_ptr_mut(0)?;
        // SAFETY: `job` is this CPU's map value; the key is copied out of it.
        let (key, buffer) = unsafe { ((*job).key, (*job).buffer) };
        let entry = Flow::lookup(&key)?;
        let buf = if buffer == job_buffer::REASSEMBLY {
            REASM.get_ptr_mut(key)?
        } else {
            SCRATCH.get_ptr_mut(0)?
        };
        Some(Self { job, entry, buf })
    }

    /// The flow's key.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        // SAFETY: live map value (see `current`).
        unsafe { (*self.job).key }
    }

    /// The stream bytes held in order.
    #[inline(always)]
    pub fn stream(&self) -> StreamView {
        // SAFETY: live map value (see `current`).
        unsafe { StreamView::of(self.buf) }
    }

    /// The bytes the job's name offsets point into: the joined records, or the stream.
    #[inline(always)]
    pub fn name_view(&self) -> Option<StreamView> {
        // SAFETY: live map values (see `current`; DEFRAG is this CPU's).
        unsafe {
            if (*self.job).joined != 0 {
                let joined = DEFRAG.get_ptr_mut(0)?;
                Some(StreamView::with_len(
                    joined,
                    (*self.job).joined_len as usize,
                ))
            } else {
                Some(StreamView::of(self.buf))
            }
        }
    }
}

/// Sets this CPU's job for the flow `key`, whose current packet has `l3_len` bytes, and
/// returns it for the caller to fill in.
#[inline(always)]
pub fn start(key: &FlowKey, l3_len: u16) -> Option<*mut ClassifyJob> {
    let job = JOBS.get_ptr_mut(0)?;
    // SAFETY: this CPU's map value.
    unsafe {
        *job = ClassifyJob {
            key: *key,
            packet_l3_len: l3_len,
            ..ClassifyJob::default()
        };
    }
    Some(job)
}

/// Continues in classification program `index`; returns only if that failed (no such
/// program loaded), with the verdict to give.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, index: u32) -> u32 {
    // SAFETY: a tail call does not return on success; on failure we just pass the packet.
    unsafe { CLASSIFIERS.tail_call(ctx, index) };
    // LLVM outlines a large program body into a BPF subprogram; a tail call made there
    // ends that subprogram, and the target's verdict is what the entry point gets back
    // from it. Were this a plain constant, LLVM would see the body always "return"
    // XDP_PASS and make the entry point return XDP_PASS itself, dropping the verdict (a
    // blocked ClientHello passed so). Hidden, it is passed on.
    core::hint::black_box(XDP_PASS)
}

/// Ends classification of this packet with its verdict under the flow's class so far. Most
/// packets pass, and are told so here from the flow's verdict (worked out once per class
/// and policy generation); a blocked one goes to `enforce_upload`, which counts it and drops
/// it or answers with a reset (a ClientHello that makes its flow blocked is itself dropped).
/// That one program carries the reset code for every classifier, so that the verifier does
/// not walk it again in each.
#[inline(always)]
pub fn verdict(ctx: &XdpContext, key: &FlowKey, entry: &mut FlowEntry) -> u32 {
    if crate::enforce::verdict_of(key, entry) != verdict::BLOCK {
        return XDP_PASS;
    }
    hand_over(ctx, tail::ENFORCE)
}
