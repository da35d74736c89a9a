//! What one LAN client may take of the tables every client shares: new flows, reassembly
//! buffers and QUIC Initials for the daemon, each a token bucket per source address, so a
//! host flooding the gateway runs out of its own quota instead of evicting its colleagues'
//! state. And, when the policy lists the LAN's prefixes, no flow at all for a source
//! outside them (spoofed or misrouted).

use aya_ebpf::btf_maps::lpm_trie::Key;
use classifier_common::{
    config::{Config, SourceQuota},
    parse::PacketMeta,
    shaping::TokenBucket,
    stats::Stat,
};

use crate::{
    flows::now_ns,
    maps::{LAN_PREFIXES, SOURCES},
    stats,
};

/// Which of a client's quotas a use draws on.
#[derive(Clone, Copy)]
pub enum Quota {
    Flows,
    Reassembly,
    Quic,
}

/// Takes one from `client`'s `quota`; false (and counted) when it is spent.
#[inline(always)]
pub fn take(client: &[u8; 16], quota: Quota, config: &Config) -> bool {
    let (rate, burst) = match quota {
        Quota::Flows => (config.flow_rate as u64, config.flow_burst as u64),
        Quota::Reassembly => (
            config.reassembly_rate as u64,
            config.reassembly_burst as u64,
        ),
        Quota::Quic => (config.quic_rate as u64, config.quic_burst as u64),
    };
    if burst == 0 {
        return true; // no quota set
    }
    let now = now_ns();
    let entry = match SOURCES.get_ptr_mut(client) {
        Some(entry) => entry,
        None => {
            // Each quota starts full at its own depth.
            let fresh = SourceQuota {
                flows: TokenBucket::full(config.flow_burst as u64, now),
                reassembly: TokenBucket::full(config.reassembly_burst as u64, now),
                quic: TokenBucket::full(config.quic_burst as u64, now),
            };
            let _ = SOURCES.insert(client, fresh, 0);
            match SOURCES.get_ptr_mut(client) {
                Some(entry) => entry,
                None => return true, // the table refused: do not punish the client for it
            }
        }
    };
    // SAFETY: a map value pointer, valid for this program run. Two CPUs updating one
    // client's bucket at once may lose a take: the quota errs by one, which is harmless.
    let allowed = unsafe {
        let bucket = match quota {
            Quota::Flows => &mut (*entry).flows,
            Quota::Reassembly => &mut (*entry).reassembly,
            Quota::Quic => &mut (*entry).quic,
        };
        bucket.take(1, rate, burst, now)
    };
    if !allowed {
        stats::bump(match quota {
            Quota::Flows => Stat::SourceOverQuota,
            Quota::Reassembly => Stat::ReassemblyOverQuota,
            Quota::Quic => Stat::QuicOverQuota,
        });
    }
    allowed
}

/// What becomes of a client→server packet that would start a new flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Make the flow.
    Track,
    /// Local control traffic (DHCP from 0.0.0.0, IPv6 link-local, multicast) from outside
    /// the LAN prefixes: pass it without a flow.
    Untracked,
    /// A source outside the LAN prefixes, or a client over its quota of new flows: drop.
    Refuse,
}

/// Whether the packet `meta` from a LAN client may start a flow.
#[inline(always)]
pub fn admit(meta: &PacketMeta, config: &Config) -> Admission {
    if config.lan_filter != 0 && !in_lan(&meta.src_addr) {
        if is_local_control(meta) {
            return Admission::Untracked;
        }
        stats::bump(Stat::ForeignSource);
        return Admission::Refuse;
    }
    if take(&meta.src_addr, Quota::Flows, config) {
        Admission::Track
    } else {
        Admission::Refuse
    }
}

#[inline(always)]
fn in_lan(addr: &[u8; 16]) -> bool {
    LAN_PREFIXES.get(&Key::new(128, *addr)).is_some()
}

/// Traffic a host sends before it has an address, or that never leaves the link.
#[inline(always)]
fn is_local_control(meta: &PacketMeta) -> bool {
    let src = &meta.src_addr;
    let dst = &meta.dst_addr;
    let v4 = meta.ip_version == 4;
    let unspecified = if v4 {
        src[12..16] == [0, 0, 0, 0]
    } else {
        *src == [0; 16]
    };
    let link_local = if v4 {
        src[12] == 169 && src[13] == 254
    } else {
        src[0] == 0xfe && src[1] & 0xc0 == 0x80
    };
    let multicast = if v4 {
        dst[12] >= 224 || dst[12..16] == [255, 255, 255, 255]
    } else {
        dst[0] == 0xff
    };
    unspecified || link_local || multicast
}
