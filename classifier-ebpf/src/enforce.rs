//! The policy's verdict for a flow, worked out once per policy generation and category,
//! and applied: blocked uploads are dropped at XDP, blocked downloads at TC.

use aya_ebpf::btf_maps::lpm_trie::Key;
use classifier_common::{
    flow::{FlowEntry, FlowKey},
    policy::{
        ActionEntry, ActionKey, ExceptionKey, VlanKey, group_prefix_data, group_prefix_len,
        policy_flags, table_of, verdict,
    },
    shaping::flow_shape_flags,
    stats::Stat,
};

use crate::{
    atomic,
    maps::{ACTIONS, CLIENT_EXC, GROUP_PREFIXES, GROUP_VLANS, POLICY_GEN},
    stats,
};

/// The flow's verdict under the policy in force, from the flow's cache when neither the
/// generation nor the category has changed since it was worked out.
#[inline(always)]
pub fn verdict_of(key: &FlowKey, entry: &mut FlowEntry) -> u8 {
    let generation = POLICY_GEN.get(0).copied().unwrap_or(0);
    let category = entry.category;
    let decided = entry.policy_flags & policy_flags::DECIDED != 0;
    if decided && entry.policy_gen == generation {
        if entry.verdict_category == category {
            return entry.verdict;
        }
    } else {
        // A new generation may move the client to another group.
        entry.group = group_of(key, entry.vlan_id, table_of(generation));
    }
    let mut action = work_out(key, entry.group, category, generation);
    let alt = entry.alt_category;
    if alt != 0 && alt != category {
        action = stricter(action, work_out(key, entry.group, alt, generation));
    }
    entry.verdict = action.verdict;
    entry.shape_class = action.shape_class;
    // A new verdict may need a client class of another rule: ask again if so.
    entry.shape_flags &= !flow_shape_flags::CLASS_ASKED;
    entry.policy_gen = generation;
    entry.verdict_category = category;
    entry.policy_flags = if action.fail_fast != 0 {
        entry.policy_flags | policy_flags::DECIDED | policy_flags::FAIL_FAST
    } else {
        (entry.policy_flags | policy_flags::DECIDED) & !policy_flags::FAIL_FAST
    };
    action.verdict
}

/// Of two actions, the one that withholds more: block, then shape, then allow. A flow whose
/// bytes named two sites (or one site and nothing readable) gets the stricter verdict.
#[inline(always)]
fn stricter(first: ActionEntry, second: ActionEntry) -> ActionEntry {
    let rank = |verdict_code: u8| match verdict_code {
        verdict::BLOCK => 2,
        verdict::SHAPE => 1,
        _ => 0,
    };
    if rank(second.verdict) > rank(first.verdict) {
        second
    } else {
        first
    }
}

/// Exceptions first, then the action table in force; allowed when neither says more.
#[inline(always)]
fn work_out(key: &FlowKey, group: u16, category: u16, generation: u32) -> ActionEntry {
    let exception = ExceptionKey {
        client_addr: key.client_addr,
        category,
        table: table_of(generation),
        _pad: 0,
    };
    if CLIENT_EXC.get_ptr(exception).is_some() {
        return ActionEntry::default();
    }
    let action = ActionKey {
        table: table_of(generation),
        _pad: 0,
        group,
        category,
        _pad2: 0,
    };
    match ACTIONS.get_ptr(action) {
        // SAFETY: a map value pointer, valid for this program run.
        Some(entry) => unsafe { *entry },
        None => ActionEntry::default(),
    }
}

/// The client's group in `table`: its VLAN's if one is claimed, else the longest prefix,
/// else 0 (`default`).
#[inline(always)]
fn group_of(key: &FlowKey, vlan_id: u16, table: u8) -> u16 {
    let vlan = VlanKey {
        table,
        _pad: 0,
        vlan: vlan_id,
    };
    if vlan_id != 0
        && let Some(group) = GROUP_VLANS.get_ptr(vlan)
    {
        // SAFETY: a map value pointer, valid for this program run.
        return unsafe { *group };
    }
    let lookup = Key::new(
        group_prefix_len(128),
        group_prefix_data(table, key.client_addr),
    );
    GROUP_PREFIXES.get(&lookup).copied().unwrap_or(0)
}

/// What happens to a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Pass,
    Drop,
    /// Drop, and tell the client at once (a TCP reset at XDP).
    DropAndReset,
}

/// Whether the packet is to be dropped; counts it as blocked if so.
#[inline(always)]
pub fn blocks(key: &FlowKey, entry: &mut FlowEntry, l3_len: u64) -> bool {
    fate(key, entry, l3_len) != Fate::Pass
}

/// The packet's [`Fate`] under the flow's verdict; counts it as blocked unless it passes.
#[inline(always)]
pub fn fate(key: &FlowKey, entry: &mut FlowEntry, l3_len: u64) -> Fate {
    if verdict_of(key, entry) != verdict::BLOCK {
        return Fate::Pass;
    }
    stats::bump(Stat::Blocked);
    // One counter pair (shared between CPUs): packets blocked, whichever way they were going.
    atomic::add_counters(&mut entry.blocked, 1, l3_len);
    if entry.policy_flags & policy_flags::FAIL_FAST != 0 {
        return Fate::DropAndReset;
    }
    Fate::Drop
}

/// XDP's action for a client's packet: pass, drop, or (fail-fast blocks) the packet turned
/// into a reset (TCP) or an ICMP unreachable (UDP) to the client and sent back (by XDP_TX,
/// or passed up marked for `lan_replies`: see [`crate::replies`]).
#[inline(always)]
pub fn upload_action(
    ctx: &aya_ebpf::programs::XdpContext,
    meta: &classifier_common::parse::PacketMeta,
    key: &FlowKey,
    entry: &mut FlowEntry,
) -> u32 {
    use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};
    match fate(key, entry, meta.l3_len as u64) {
        Fate::Pass => XDP_PASS,
        Fate::Drop => XDP_DROP,
        // A fragment has no transport header (or a partial one) to answer from.
        Fate::DropAndReset
            if meta.fragment != classifier_common::parse::headers::fragment::NONE =>
        {
            XDP_DROP
        }
        Fate::DropAndReset if crate::reset::tcp_reset(ctx, meta) => {
            crate::replies::send_back(ctx, Stat::ResetsSent)
        }
        Fate::DropAndReset if crate::reset::udp_unreachable(ctx, meta) => {
            crate::replies::send_back(ctx, Stat::UnreachablesSent)
        }
        Fate::DropAndReset => XDP_DROP,
    }
}
