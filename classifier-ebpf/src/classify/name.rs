//! The `name_lookup` program: a found server name → its category and application (the
//! longest listed suffix wins) → the flow's class, and the event that carries the name.

use core::ops::ControlFlow;

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    classify::{Method, app, class_flags},
    config::ClassResult,
    domain::{DomainEntry, MAX_NAME_LEN, SuffixHash},
    flow::{FlowEntry, FlowKey},
    parse::PacketBytes,
    stats::Stat,
};

use super::{
    apply::{
        NameRef, emit_classified, finish, finish_stream, release_buffer, second_category,
        set_bittorrent, set_class,
    },
    job::{self, Job},
};
use crate::{
    bounded_loop::{LoopBody, bounded_loop},
    maps::{DOMAINS, LOOPS, LoopState},
    packet::StreamView,
    stats,
};

/// Classifies the job's flow by the name the parser found, and finishes it; or, for a
/// second version of bytes already named, compares the names and lets a different one add
/// its category to the verdict.
#[inline(always)]
pub fn name_lookup(ctx: &XdpContext) -> u32 {
    let Some(mut job) = Job::current() else {
        return XDP_PASS;
    };
    classify_job(ctx, &mut job)
}

/// [`name_lookup`] for the current job.
#[inline(always)]
pub fn classify_job(ctx: &XdpContext, job: &mut Job) -> u32 {
    let Some(view) = job.name_view() else {
        return XDP_PASS;
    };
    // SAFETY: this CPU's job value, live for the program run; copied out.
    let found = unsafe { *job.job };
    let name = NameRef {
        view: &view,
        offset: found.name_offset as usize,
        len: found.name_len as usize,
    };
    let looked_up = lookup(&name);
    if job.entry.class_flags & class_flags::RECHECK != 0 {
        second_version(&found.key, &mut job.entry, &name, &looked_up);
        return job::verdict(ctx, &found.key, &mut job.entry);
    }
    if found.tracker != 0 {
        set_bittorrent(&found.key, &mut job.entry, Method::BtTracker);
        finish(&found.key, &mut job.entry, Some(name));
        release_buffer(&found.key, &mut job.entry);
    } else {
        classify_by_name(
            &mut job.entry,
            &looked_up,
            Method::from_u8(found.method),
            found.protocol_app,
        );
        finish_stream(
            &found.key,
            &mut job.entry,
            Some(name),
            found.parsed_end,
            looked_up.hash,
        );
    }
    if found.joined != 0 {
        stats::bump(Stat::RecordsJoined);
    }
    job::verdict(ctx, &found.key, &mut job.entry)
}

/// A second version of the named bytes named `looked_up`: the same name is a
/// retransmission; another one is an evasion attempt, and its category (or, unlisted,
/// none) joins the verdict, and the daemon hears of it.
#[inline(always)]
fn second_version(key: &FlowKey, entry: &mut FlowEntry, name: &NameRef<'_>, looked_up: &Looked) {
    if looked_up.hash == entry.name_hash {
        entry.class_flags &= !class_flags::RECHECK;
        return;
    }
    let category = match looked_up.listed {
        Some(listed) => listed.category,
        None => entry.category,
    };
    second_category(entry, category);
    emit_classified(
        key,
        entry,
        Some(NameRef {
            view: name.view,
            offset: name.offset,
            len: name.len,
        }),
        true,
    );
}

/// The flow's class from its name: the listed domain's category and application, or, for
/// an unlisted name, the protocol as application and whatever category a port gave.
#[inline(always)]
fn classify_by_name(entry: &mut FlowEntry, looked_up: &Looked, method: Method, protocol: u16) {
    let current = entry.category;
    let class = match looked_up.listed {
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
    set_class(entry, class);
}

/// What a name looked up to: its longest listed suffix's entry, and the name's own hash
/// (to tell it from another name).
struct Looked {
    listed: Option<DomainEntry>,
    hash: u32,
}

/// Looks every label-aligned suffix of the name up in `DOMAINS`, shortest first, and keeps
/// the last (longest) match. A trailing dot is ignored; letters match in any case.
#[inline(always)]
fn lookup(name: &NameRef<'_>) -> Looked {
    let mut len = name.len;
    if len == 0 || len > MAX_NAME_LEN {
        return Looked {
            listed: None,
            hash: 0,
        };
    }
    if name.view.read::<1>(name.offset + len - 1) == Some([b'.']) {
        len -= 1;
    }
    let Some(state) = LOOPS.get_ptr_mut(0) else {
        return Looked {
            listed: None,
            hash: 0,
        };
    };
    // SAFETY: this CPU's loop state, live for the program run.
    unsafe {
        (*state).suffix = SuffixHash::new();
        (*state).found = 0;
    }
    let mut walk = SuffixWalk {
        view: name.view,
        last: name.offset + len - 1,
        len,
        state,
    };
    bounded_loop(MAX_NAME_LEN as u32, &mut walk);
    // SAFETY: as above.
    let (hash, best) = unsafe {
        let best = ((*state).found != 0).then_some((*state).best);
        ((*state).suffix, best)
    };
    // The whole name is the longest suffix of all.
    let listed = match find(&hash) {
        Some(found) => Some(found),
        None => best,
    };
    // Never 0, which stands for "no name" in the flow entry.
    Looked {
        listed,
        hash: (hash.key as u32) | 1,
    }
}

/// The name read right to left; at each dot, the suffix to its right is looked up. The
/// running hash and the best match are in this CPU's `LOOPS`.
struct SuffixWalk<'a> {
    view: &'a StreamView,
    /// Offset of the name's last byte.
    last: usize,
    len: usize,
    state: *mut LoopState,
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
        // SAFETY: this CPU's loop state (see `lookup`).
        unsafe {
            let state = &mut *self.state;
            if byte == b'.'
                && let Some(found) = find(&state.suffix)
            {
                state.best = found;
                state.found = 1;
            }
            state.suffix.push(byte);
        }
        ControlFlow::Continue(())
    }

    #[inline(always)]
    fn loop_state(&self) -> Option<*mut LoopState> {
        Some(self.state)
    }
}

#[inline(always)]
fn find(hash: &SuffixHash) -> Option<DomainEntry> {
    let entry = DOMAINS.get_ptr(hash.key)?;
    // SAFETY: a map value pointer valid for this program run; DomainEntry is Copy.
    let entry = unsafe { *entry };
    (entry.check == hash.check).then_some(entry)
}
