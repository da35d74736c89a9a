//! Handing an upload's flow from the LAN side to the WAN side across address translation.
//!
//! A gateway that masquerades rewrites the client's source address and port in netfilter
//! POSTROUTING, before the WAN's TC egress sees the packet: there the 5-tuple is no longer
//! the flow's key. The LAN's TC ingress (`lan_nat_mark`, before netfilter) sees the original
//! packet; it writes the flow's key into a slot of `NAT_SLOTS` and the slot's number into
//! the bits of the skb mark that the site gives it ([`NatConfig::mark_mask`]): the mark
//! survives forwarding and NAT. `wan_egress` reads the slot back, checks that the slot's
//! key names the packet's server (address, port, protocol: masquerade leaves them alone),
//! and shapes the packet as its flow's; the translated source it sees goes into
//! `NAT_PUBLIC` for the flow's record.
//!
//! A slot is a flow's while the flow sends at least once every [`SLOT_HOLD_NS`]; a packet
//! crosses the gateway in far less, so a slot is never taken from under a packet in
//! flight. A flow finds its slot by hashing its key, trying [`SLOT_PROBES`] slots.

use crate::flow::FlowKey;

/// Slots in `NAT_SLOTS`; slot 0 is never used (a mark of 0 in the mask means "none").
pub const NAT_SLOTS_ENTRIES: usize = 65_536;
/// The fewest mask bits accepted: 4095 slots.
pub const MIN_MASK_BITS: u32 = 12;
/// How long a slot stays its flow's after the flow's last upload packet.
pub const SLOT_HOLD_NS: u64 = 2_000_000_000;
/// Slots a flow tries before it goes unmarked (its WAN packets then pass unshaped).
pub const SLOT_PROBES: u32 = 4;

/// The NAT hand-over's settings: the one entry of `NAT_CONFIG`. All zero: off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// The skb mark bits that carry the slot number (contiguous).
    pub mark_mask: u32,
    /// The mask's lowest bit.
    pub mark_shift: u32,
    /// Usable slots: 1..=slots.
    pub slots: u32,
    pub _pad: u32,
}

/// Why a mark mask cannot carry slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskError {
    /// The bits are not one run (a site's own marks are usually a run too).
    NotContiguous,
    /// Fewer than [`MIN_MASK_BITS`] bits.
    TooNarrow(u32),
}

impl core::fmt::Display for MaskError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MaskError::NotContiguous => f.write_str("its bits must be one contiguous run"),
            MaskError::TooNarrow(bits) => write!(
                f,
                "it has {bits} bits; at least {MIN_MASK_BITS} are needed (4095 flows at once)"
            ),
        }
    }
}

impl NatConfig {
    /// The settings for a mark mask, or why the mask cannot serve.
    pub fn for_mask(mask: u32) -> Result<Self, MaskError> {
        if mask == 0 {
            return Err(MaskError::TooNarrow(0));
        }
        let shift = mask.trailing_zeros();
        let run = mask >> shift;
        if run & run.wrapping_add(1) != 0 {
            return Err(MaskError::NotContiguous);
        }
        let bits = run.count_ones();
        if bits < MIN_MASK_BITS {
            return Err(MaskError::TooNarrow(bits));
        }
        let slots = run.min(NAT_SLOTS_ENTRIES as u32 - 1);
        Ok(Self {
            mark_mask: mask,
            mark_shift: shift,
            slots,
            _pad: 0,
        })
    }

    pub fn is_on(&self) -> bool {
        self.slots != 0
    }

    /// The mark with `slot` in the mask's bits, the site's other bits kept.
    pub fn marked(&self, mark: u32, slot: u32) -> u32 {
        (mark & !self.mark_mask) | ((slot << self.mark_shift) & self.mark_mask)
    }

    /// The slot number a mark carries (0: none, or out of range).
    pub fn slot_of(&self, mark: u32) -> u32 {
        let slot = (mark & self.mark_mask) >> self.mark_shift;
        if slot > self.slots { 0 } else { slot }
    }

    /// The `probe`th slot a flow whose key hashes to `hash` tries (1..=slots).
    pub fn probe(&self, hash: u32, probe: u32) -> u32 {
        if self.slots == 0 {
            return 0;
        }
        1 + hash.wrapping_add(probe) % self.slots
    }
}

/// One slot of `NAT_SLOTS`: the flow that holds it and when it last sent through it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSlot {
    pub key: FlowKey,
    pub last_ns: u64,
}

/// The translated (public) source of a flow's uploads, as the WAN egress saw it: one
/// `NAT_PUBLIC` value. The address is IPv4-mapped for IPv4, as in [`FlowKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublicSource {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}

/// FNV-1a over the key's bytes that name the flow: which slots it tries.
pub fn key_hash(key: &FlowKey) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut eat = |byte: u8| {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
    };
    // Unrolled by the compiler; no loop the verifier has to bound beyond 16.
    for i in 0..16 {
        eat(key.client_addr[i]);
    }
    for i in 0..16 {
        eat(key.server_addr[i]);
    }
    for byte in key.client_port.to_le_bytes() {
        eat(byte);
    }
    for byte in key.server_port.to_le_bytes() {
        eat(byte);
    }
    eat(key.protocol);
    hash
}

/// Whether the slot's flow goes to the packet's server: masquerade rewrites only the
/// source, so a slot read back for another flow (taken meanwhile, or a forged mark) fails.
pub fn names_server(key: &FlowKey, server_addr: &[u8; 16], server_port: u16, protocol: u8) -> bool {
    key.server_addr == *server_addr && key.server_port == server_port && key.protocol == protocol
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_is_one_run_of_enough_bits() {
        assert_eq!(NatConfig::for_mask(0), Err(MaskError::TooNarrow(0)));
        assert_eq!(NatConfig::for_mask(0xff00), Err(MaskError::TooNarrow(8)));
        assert_eq!(
            NatConfig::for_mask(0x0f0f_0000),
            Err(MaskError::NotContiguous)
        );
        let config = NatConfig::for_mask(0x0fff_f000).unwrap();
        assert_eq!(config.mark_shift, 12);
        assert_eq!(config.slots, 0xffff);
        let narrow = NatConfig::for_mask(0x0000_fff0).unwrap();
        assert_eq!(narrow.slots, 0xfff);
        let whole = NatConfig::for_mask(u32::MAX).unwrap();
        assert_eq!(whole.slots, NAT_SLOTS_ENTRIES as u32 - 1);
    }

    #[test]
    fn the_slot_goes_into_the_mask_and_the_sites_bits_stay() {
        let config = NatConfig::for_mask(0x00ff_ff00).unwrap();
        let mark = config.marked(0xaa00_00bb, 0x1234);
        assert_eq!(mark, 0xaa12_34bb);
        assert_eq!(config.slot_of(mark), 0x1234);
        assert_eq!(config.slot_of(0xaa00_00bb), 0);
        let narrow = NatConfig::for_mask(0x000f_ff00).unwrap();
        assert_eq!(narrow.slot_of(0x000f_ff00), 0xfff);
    }

    #[test]
    fn probes_stay_within_the_slots_and_never_use_slot_zero() {
        let config = NatConfig::for_mask(0x0000_fff0).unwrap();
        for hash in [0, 1, 4094, 4095, u32::MAX] {
            for probe in 0..SLOT_PROBES {
                let slot = config.probe(hash, probe);
                assert!((1..=config.slots).contains(&slot), "{hash} {probe}: {slot}");
            }
        }
        assert_eq!(NatConfig::default().probe(7, 0), 0);
    }

    #[test]
    fn a_slot_names_only_its_own_server() {
        let key = FlowKey {
            server_addr: [9; 16],
            server_port: 443,
            protocol: 6,
            ..FlowKey::default()
        };
        assert!(names_server(&key, &[9; 16], 443, 6));
        assert!(!names_server(&key, &[9; 16], 443, 17));
        assert!(!names_server(&key, &[9; 16], 444, 6));
        assert!(!names_server(&key, &[8; 16], 443, 6));
        let other = FlowKey {
            client_port: 1,
            ..key
        };
        assert_ne!(key_hash(&key), key_hash(&other));
    }
}
