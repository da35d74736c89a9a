//! Shaping at TC egress, for flows whose verdict is `shape`: downloads on the LAN
//! interface, uploads on the WAN interface.
//!
//! A shaped packet is first offered to the rule's allowances, the short-clip volume and the
//! minutes of use (passed at full speed while both last); after that it goes into the rule's
//! HTB class by `skb->priority` (HTB reads the priority before any filter, and TCX runs
//! before the qdisc), or, with the policer, passes or drops by the rule's token bucket; a
//! `block` rule with an allowance drops it.

use aya_ebpf::programs::TcContext;
use classifier_common::{
    event::{ShapeClientEvent, kind},
    flow::{FlowEntry, FlowKey},
    policy::table_of,
    shaping::{
        BucketKey, ClientClassKey, MINUTE_NS, MinuteCount, ShapeRule, TokenBucket, bucket_kind,
        flow_shape_flags, htb_priority, shape_flags, shaper_index,
    },
    stats::Stat,
};

use crate::{
    atomic,
    flows::{WireCount, now_ns},
    maps::{BUCKETS, CLIENT_CLASSES, EVENTS, POLICY_GEN, SHAPERS},
    stats,
};

/// What shaping does with a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shaped {
    /// Pass untouched (allowance left, the policer's tokens, or no rule in force).
    Pass,
    /// Pass into the HTB class with this `skb->priority`.
    Class(u32),
    /// The policer's bucket is empty: drop.
    Drop,
}

/// Shapes a packet of a flow whose verdict is `shape` (worked out by the caller).
#[inline(always)]
pub fn shape(key: &FlowKey, entry: &mut FlowEntry, count: WireCount) -> Shaped {
    let class = entry.shape_class;
    let table = table_of(POLICY_GEN.get(0).copied().unwrap_or(0));
    let Some(rule) = SHAPERS.get(shaper_index(table, class)).copied() else {
        return Shaped::Pass;
    };
    if !rule.is_set() {
        // A class the daemon has not filled in (never in a consistent table).
        return Shaped::Pass;
    }
    let now = now_ns();
    if within_allowances(key, class, &rule, count, now) {
        stats::bump(Stat::AllowancePassed);
        return Shaped::Pass;
    }
    if rule.flags & shape_flags::BLOCK_WHEN_SPENT != 0 {
        atomic::add_counters(&mut entry.blocked, count.packets, count.bytes);
        stats::bump(Stat::Blocked);
        return Shaped::Drop;
    }
    atomic::add_counters(&mut entry.shaped, count.packets, count.bytes);
    if rule.flags & shape_flags::POLICER != 0 {
        if police(key, class, &rule, count, now) {
            return Shaped::Pass;
        }
        stats::bump(Stat::PolicerDropped);
        return Shaped::Drop;
    }
    stats::bump(Stat::Shaped);
    Shaped::Class(htb_priority(htb_minor(key, entry, class, &rule)))
}

/// Applies [`shape`]'s answer to the skb; returns the TC action.
#[inline(always)]
pub fn shape_skb(ctx: &TcContext, key: &FlowKey, entry: &mut FlowEntry, count: WireCount) -> i32 {
    match shape(key, entry, count) {
        Shaped::Pass => crate::TC_ACT_PIPE,
        Shaped::Class(priority) => {
            // SAFETY: `skb` is the program's context; TC programs may write `priority`.
            unsafe { (*ctx.skb.skb).priority = priority };
            crate::TC_ACT_PIPE
        }
        Shaped::Drop => crate::TC_ACT_SHOT,
    }
}

/// Whether the rule has an allowance and the packet is within all it has: the minutes of
/// use are counted first (a packet in a new minute starts it even when the volume is spent,
/// as the minute is used), then the volume taken, only while minutes are left.
#[inline(always)]
fn within_allowances(
    key: &FlowKey,
    class: u16,
    rule: &ShapeRule,
    count: WireCount,
    now: u64,
) -> bool {
    let timed = rule.flags & shape_flags::TIME_ALLOWANCE != 0;
    let metered = rule.flags & shape_flags::ALLOWANCE != 0;
    if !timed && !metered {
        return false;
    }
    if timed && !within_minutes(key, class, rule, now) {
        return false;
    }
    !metered || within_allowance(key, class, rule, count, now)
}

/// Counts the packet's minute of use under the rule (the client's, or everyone's under a
/// shared rule); false once the minutes of the window are spent.
#[inline(always)]
fn within_minutes(key: &FlowKey, class: u16, rule: &ShapeRule, now: u64) -> bool {
    let bucket = bucket_key(key, class, rule, bucket_kind::MINUTES);
    let allowed = rule.allowance_minutes as u32;
    let window_ns = rule.allowance_window_minutes as u64 * MINUTE_NS;
    if let Some(stored) = BUCKETS.get_ptr_mut(bucket) {
        // SAFETY: a map value pointer, valid for this program run; a race with another CPU
        // costs a minute at most (see MinuteCount).
        unsafe {
            let mut minutes = MinuteCount::from(*stored);
            let within = minutes.count(now, allowed, window_ns);
            *stored = TokenBucket::from(minutes);
            return within;
        }
    }
    let minutes = MinuteCount::starting(now);
    // A full LRU map evicts; a failed insert leaves the next packet to try again.
    let _ = BUCKETS.insert(bucket, TokenBucket::from(minutes), 0);
    minutes.minutes <= allowed
}

/// Takes the packet from the client's allowance under the rule; false once it is spent.
#[inline(always)]
fn within_allowance(
    key: &FlowKey,
    class: u16,
    rule: &ShapeRule,
    count: WireCount,
    now: u64,
) -> bool {
    let bucket = BucketKey {
        client_addr: key.client_addr,
        class,
        kind: bucket_kind::ALLOWANCE,
        _pad: 0,
    };
    take(
        &bucket,
        count.bytes,
        rule.allowance_refill,
        rule.allowance_bytes,
        now,
    )
}

/// Takes the packet from the policer's bucket: the client's own (per-client rules) or
/// the rule's shared one.
#[inline(always)]
fn police(key: &FlowKey, class: u16, rule: &ShapeRule, count: WireCount, now: u64) -> bool {
    let bucket = bucket_key(key, class, rule, bucket_kind::POLICER);
    take(&bucket, count.bytes, rule.rate_bytes, rule.burst_bytes, now)
}

/// The bucket of `kind` a packet of the flow `key` counts in under the rule of `class`:
/// the client's own under a per-client rule, else the one all the rule's clients share
/// (client address zero).
#[inline(always)]
fn bucket_key(key: &FlowKey, class: u16, rule: &ShapeRule, kind: u8) -> BucketKey {
    let client_addr = if rule.flags & shape_flags::PER_CLIENT != 0 {
        key.client_addr
    } else {
        [0; 16]
    };
    BucketKey {
        client_addr,
        class,
        kind,
        _pad: 0,
    }
}

/// [`TokenBucket::take`] on the bucket in `BUCKETS`, made full when it is not there.
#[inline(always)]
fn take(key: &BucketKey, bytes: u64, per_second: u64, depth: u64, now: u64) -> bool {
    if let Some(bucket) = BUCKETS.get_ptr_mut(key) {
        // SAFETY: a map value pointer, valid for this program run; a race with another
        // CPU costs a packet's worth of tokens (see TokenBucket).
        return unsafe { (*bucket).take(bytes, per_second, depth, now) };
    }
    let mut bucket = TokenBucket::full(depth, now);
    let taken = bucket.take(bytes, per_second, depth, now);
    // A full LRU map evicts; a failed insert leaves the next packet to try again.
    let _ = BUCKETS.insert(key, bucket, 0);
    taken
}

/// The HTB class for the packet: the client's own under a per-client rule, once the
/// daemon has made it (asked for once per flow and generation); the rule's until then.
#[inline(always)]
fn htb_minor(key: &FlowKey, entry: &mut FlowEntry, class: u16, rule: &ShapeRule) -> u16 {
    if rule.flags & shape_flags::PER_CLIENT == 0 {
        return class;
    }
    let client = ClientClassKey {
        client_addr: key.client_addr,
        class,
        _pad: [0; 2],
    };
    if let Some(minor) = CLIENT_CLASSES.get_ptr(client) {
        // SAFETY: a map value pointer, valid for this program run.
        return unsafe { *minor };
    }
    if entry.shape_flags & flow_shape_flags::CLASS_ASKED == 0 {
        entry.shape_flags |= flow_shape_flags::CLASS_ASKED;
        ask_for_client_class(key, class);
    }
    class
}

fn ask_for_client_class(key: &FlowKey, class: u16) {
    let Some(mut slot) = EVENTS.reserve_untyped::<ShapeClientEvent>(0) else {
        stats::bump(Stat::EventsDropped);
        return;
    };
    let event = slot.as_mut_ptr();
    // SAFETY: ring buffer memory reserved for a ShapeClientEvent.
    unsafe {
        (*event).kind = kind::SHAPE_CLIENT;
        (*event)._pad = 0;
        (*event).class = class;
        (*event)._pad2 = 0;
        (*event).client_addr = key.client_addr;
    }
    slot.submit(crate::events::urgent(size_of::<ShapeClientEvent>()));
    stats::bump(Stat::ClientClassRequested);
}
