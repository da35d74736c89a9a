//! The hand-over between classification programs: this CPU's [`ClassifyJob`], the flow it
//! is about, and the stream buffer holding the flow's first bytes.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use classifier_common::{
    config::{ClassifyJob, StreamBuf},
    flow::FlowEntry,
    stats::Stat,
};

use crate::{
    maps::{CLASSIFIERS, FLOWS, JOBS, REASM, SCRATCH},
    stats,
};

/// This CPU's job, its flow's entry and its stream buffer, all live for the program run.
pub struct Job {
    pub job: *mut ClassifyJob,
    pub entry: *mut FlowEntry,
    pub buf: *mut StreamBuf,
}

impl Job {
    /// The current job, if its flow and buffer still exist.
    #[inline(always)]
    pub fn current() -> Option<Self> {
        let job = JOBS.get_ptr_mut(0)?;
        // SAFETY: `job` is this CPU's map value; the key is copied out of it.
        let (key, in_reassembly) = unsafe { ((*job).key, (*job).in_reassembly) };
        let entry = FLOWS.get_ptr_mut(key)?;
        let buf = if in_reassembly != 0 {
            REASM.get_ptr_mut(key)?
        } else {
            SCRATCH.get_ptr_mut(0)?
        };
        Some(Self { job, entry, buf })
    }

    /// Whether the bytes are in the flow's reassembly entry.
    #[inline(always)]
    pub fn in_reassembly(&self) -> bool {
        // SAFETY: live map value (see `current`).
        unsafe { (*self.job).in_reassembly != 0 }
    }

    /// The verdict for the packet being classified, under the flow's class so far: a
    /// ClientHello that makes its flow blocked is itself dropped.
    #[inline(always)]
    pub fn verdict(&self) -> u32 {
        // SAFETY: live map values (see `current`).
        let blocked = unsafe {
            let job = &*self.job;
            crate::enforce::blocks(&job.key, self.entry, job.packet_l3_len as u64)
        };
        if blocked { XDP_DROP } else { XDP_PASS }
    }

    /// [`Job::verdict`], and for a fail-fast block of a TCP flow the packet turned into a
    /// reset to the client (XDP_TX): the packet that named a blocked site ends the visit.
    #[inline(always)]
    pub fn verdict_answering(&self, ctx: &aya_ebpf::programs::XdpContext) -> u32 {
        use classifier_common::parse::{PacketMeta, Parsed, parse_headers};
        let mut meta = PacketMeta::default();
        if parse_headers(&crate::packet::DirectPacket::xdp(ctx), &mut meta) != Ok(Parsed::Ip) {
            return self.verdict();
        }
        // SAFETY: live map values (see `current`).
        unsafe {
            let job = &*self.job;
            crate::enforce::upload_action(ctx, &meta, &job.key, self.entry)
        }
    }

    /// Drops the flow's reassembly entry once classification is over.
    #[inline(always)]
    pub fn release_buffer(&self, completed: bool) {
        if self.in_reassembly() {
            // SAFETY: live map value (see `current`).
            let _ = REASM.remove(unsafe { (*self.job).key });
            if completed {
                stats::bump(Stat::Reassembled);
            }
        }
    }
}

/// Sets this CPU's job for the flow `key`, whose current packet has `l3_len` bytes.
#[inline(always)]
pub fn start(key: &classifier_common::flow::FlowKey, in_reassembly: bool, l3_len: u16) -> bool {
    let Some(job) = JOBS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's map value.
    unsafe {
        *job = ClassifyJob {
            key: *key,
            in_reassembly: in_reassembly as u8,
            packet_l3_len: l3_len,
            ..ClassifyJob::default()
        };
    }
    true
}

/// Continues in classification program `index`; returns only if that failed (no such
/// program loaded), with the verdict to give.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, index: u32) -> u32 {
    // SAFETY: a tail call does not return on success; on failure we just pass the packet.
    unsafe { CLASSIFIERS.tail_call(ctx, index) };
    XDP_PASS
}
