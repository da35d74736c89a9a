//! The `name_lookup` program: a found server name → its category and application (the
//! longest listed suffix wins) → the flow's class, and the event that carries the name.

use core::ops::ControlFlow;

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    classify::{Method, app},
    config::ClassResult,
    domain::{DomainEntry, MAX_NAME_LEN, SuffixHash},
    flow::FlowEntry,
    parse::PacketBytes,
};

use super::{
    apply::{NameRef, finish, set_bittorrent, set_class},
    job::Job,
};
use crate::{
    bounded_loop::{LoopBody, bounded_loop},
    maps::DOMAINS,
    packet::StreamView,
};

/// Classifies the job's flow by the name the parser found, and finishes it.
#[inline(always)]
pub fn name_lookup(ctx: &XdpContext) -> u32 {
    let Some(job) = Job::current() else {
        return XDP_PASS;
    };
    // SAFETY: the job's values are live for this program run.
    unsafe {
        let found = *job.job;
        let view = StreamView::of(job.buf);
        let name = NameRef {
            view: &view,
            offset: found.name_offset as usize,
            len: found.name_len as usize,
        };
        if found.tracker != 0 {
            set_bittorrent(&found.key, job.entry, Method::BtTracker);
        } else {
            classify_by_name(
                job.entry,
                &name,
                Method::from_u8(found.method),
                found.protocol_app,
            );
        }
        finish(&found.key, job.entry, Some(name));
        job.release_buffer(true);
    }
    job.verdict_answering(ctx)
}

/// The flow's class from its name: the listed domain's category and application, or, for
/// an unlisted name, the protocol as application and whatever category a port gave.
#[inline(always)]
unsafe fn classify_by_name(
    entry: *mut FlowEntry,
    name: &NameRef<'_>,
    method: Method,
    protocol: u16,
) {
    // SAFETY: forwarded from the caller.
    let current = unsafe { (*entry).category };
    let class = match lookup(name) {
        Some(listed) => ClassResult {
            category: listed.category,
            app: if listed.app != app::UNKNOWN {
                listed.app
            } else {
                protocol
            },
            method: method as u8,
            ..ClassResult::default()
        },
        None => ClassResult {
            category: current,
            app: protocol,
            method: method as u8,
            ..ClassResult::default()
        },
    };
    // SAFETY: forwarded from the caller.
    unsafe { set_class(entry, class) };
}

/// Looks every label-aligned suffix of the name up in `DOMAINS`, shortest first, and keeps
/// the last (longest) match. A trailing dot is ignored; letters match in any case.
#[inline(always)]
fn lookup(name: &NameRef<'_>) -> Option<DomainEntry> {
    let mut len = name.len;
    if len == 0 || len > MAX_NAME_LEN {
        return None;
    }
    if name.view.read::<1>(name.offset + len - 1) == Some([b'.']) {
        len -= 1;
    }
    let mut walk = SuffixWalk {
        view: name.view,
        last: name.offset + len - 1,
        len,
        hash: SuffixHash::new(),
        best: None,
    };
    bounded_loop(MAX_NAME_LEN as u32, &mut walk);
    // The whole name is the longest suffix of all.
    match find(&walk.hash) {
        Some(found) => Some(found),
        None => walk.best,
    }
}

/// The name read right to left; at each dot, the suffix to its right is looked up.
struct SuffixWalk<'a> {
    view: &'a StreamView,
    /// Offset of the name's last byte.
    last: usize,
    len: usize,
    hash: SuffixHash,
    best: Option<DomainEntry>,
}

impl LoopBody for SuffixWalk<'_> {
    #[inline(always)]
    fn step(&mut self, index: u32) -> ControlFlow<()> {
        let index = index as usize;
        if index >= self.len {
            return ControlFlow::Break(());
        }
        let Some([byte]) = self.view.read::<1>(self.last - index) else {
            return ControlFlow::Break(());
        };
        if byte == b'.'
            && let Some(found) = find(&self.hash)
        {
            self.best = Some(found);
        }
        self.hash.push(byte);
        ControlFlow::Continue(())
    }
}

#[inline(always)]
fn find(hash: &SuffixHash) -> Option<DomainEntry> {
    let entry = DOMAINS.get_ptr(hash.key)?;
    // SAFETY: a map value pointer valid for this program run; DomainEntry is Copy.
    let entry = unsafe { *entry };
    (entry.check == hash.check).then_some(entry)
}
