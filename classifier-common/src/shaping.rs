//! Shaping as the datapath holds it: one [`ShapeRule`] per shaping rule of the policy,
//! token buckets for the short-clip allowance and the policer fallback, and the per-client
//! HTB classes the daemon makes.
//!
//! A shaped packet either goes into an HTB class (the TC program sets `skb->priority` to
//! the class id, which HTB reads before its filters), or, with the policer, passes while
//! its bucket has tokens and is dropped when it has none. The short-clip allowance is a
//! bucket too: while a client's allowance has bytes left, its packets pass unshaped.
//!
//! [`ShapeRule`]s are double-buffered like the action table: the rule for class `c` in
//! table `t` sits at index `t * MAX_SHAPE_CLASSES + c` of `SHAPERS`.

/// Shape classes per table: class ids 1..=255 (0: no class). A policy with more shaping
/// rules is refused by `policy check`.
pub const MAX_SHAPE_CLASSES: u32 = 256;

/// The HTB qdisc's handle major (`1:`): class `1:c` is class `c`'s shared class.
pub const HTB_MAJOR: u32 = 1;
/// Minor ids from here up are per-client classes, handed out by the daemon.
pub const CLIENT_MINOR_BASE: u16 = 0x100;

/// `skb->priority` that puts a packet into HTB class `1:minor`.
#[inline(always)]
pub const fn htb_priority(minor: u16) -> u32 {
    (HTB_MAJOR << 16) | minor as u32
}

/// Index of class `class` of table `table` in `SHAPERS`.
#[inline(always)]
pub const fn shaper_index(table: u8, class: u16) -> u32 {
    (table as u32 & 1) * MAX_SHAPE_CLASSES + (class as u32 % MAX_SHAPE_CLASSES)
}

/// Bits of [`ShapeRule::flags`].
pub mod shape_flags {
    /// Each client gets the rate to itself (its own class or bucket).
    pub const PER_CLIENT: u32 = 1 << 0;
    /// Police with a token bucket in the datapath instead of HTB classes.
    pub const POLICER: u32 = 1 << 1;
    /// The rule has a short-clip allowance (`allowance_bytes` per `allowance_period_ns`).
    pub const ALLOWANCE: u32 = 1 << 2;
}

/// Bits of [`crate::flow::FlowEntry::shape_flags`].
pub mod flow_shape_flags {
    /// The daemon was asked for the client's own class under this generation's verdict.
    pub const CLASS_ASKED: u8 = 1 << 0;
}

/// One shaping rule as the datapath applies it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShapeRule {
    /// The rate, in bytes per second (the policy writes bits: "2mbit" is 250,000).
    pub rate_bytes: u64,
    /// The policer's bucket depth in bytes: how far a flow may run ahead of the rate.
    pub burst_bytes: u64,
    /// The allowance: this many bytes at full speed...
    pub allowance_bytes: u64,
    /// ...refilled at this many bytes per second ([`allowance_rate`]: evenly over its
    /// period, so an allowance unused for a whole period is full again).
    pub allowance_refill: u64,
    /// [`shape_flags`] bits.
    pub flags: u32,
    pub _pad: u32,
}

/// What a [`BucketKey`] bucket meters.
pub mod bucket_kind {
    /// A client's short-clip allowance under a rule.
    pub const ALLOWANCE: u8 = 1;
    /// The policer's bucket of a rule (shared: client all zero) or of a client under it.
    pub const POLICER: u8 = 2;
}

/// Key of the `BUCKETS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// The client (IPv4-mapped), or all zero for a rule's shared bucket.
    pub client_addr: [u8; 16],
    /// The shape class (the rule).
    pub class: u16,
    /// [`bucket_kind`].
    pub kind: u8,
    pub _pad: u8,
}

/// A token bucket: `tokens` bytes at `updated_ns`, refilled at a rate up to a depth.
///
/// Updates from several CPUs at once may lose a refill or a take: the bucket then errs by
/// one packet, which shaping does not notice.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    pub tokens: u64,
    pub updated_ns: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ns`.
    pub const fn full(depth: u64, now_ns: u64) -> Self {
        Self {
            tokens: depth,
            updated_ns: now_ns,
        }
    }

    /// Refills for the time since the last update (`per_second` bytes each second, up to
    /// `depth`), then takes `bytes` if the bucket holds them. Returns whether it did.
    /// Exact for rates below 2^34 bytes/s (137 Gbit/s) and depths below 2^62 bytes.
    #[inline(always)]
    pub fn take(&mut self, bytes: u64, per_second: u64, depth: u64, now_ns: u64) -> bool {
        self.refill(per_second, depth, now_ns);
        if self.tokens < bytes {
            return false;
        }
        self.tokens -= bytes;
        true
    }

    #[inline(always)]
    fn refill(&mut self, per_second: u64, depth: u64, now_ns: u64) {
        if per_second == 0 || now_ns <= self.updated_ns {
            return;
        }
        let elapsed = now_ns - self.updated_ns;
        // Whole seconds and the rest apart, so that no product overflows u64 (the BPF
        // target has no 128-bit or overflow-checked multiply): rest < 2^30, and the
        // seconds are only multiplied out when they do not already fill the bucket.
        let secs = elapsed / 1_000_000_000;
        if secs > depth / per_second {
            self.tokens = depth;
            self.updated_ns = now_ns;
            return;
        }
        let rest = elapsed % 1_000_000_000;
        let added = secs * per_second + rest * per_second / 1_000_000_000;
        if added == 0 {
            // Too little time for a whole byte: keep the clock where it was, so that
            // frequent packets still earn their refill.
            return;
        }
        self.tokens = (self.tokens + added).min(depth);
        self.updated_ns = now_ns;
    }
}

/// The refill rate, in bytes per second, of an allowance of `bytes` per `period_ns`.
#[inline(always)]
pub const fn allowance_rate(bytes: u64, period_ns: u64) -> u64 {
    if period_ns == 0 {
        return 0;
    }
    // u128: 20 GB per hour times 1e9 overflows u64.
    let rate = bytes as u128 * 1_000_000_000 / period_ns as u128;
    if rate > u64::MAX as u128 {
        u64::MAX
    } else {
        rate as u64
    }
}

/// Key of the `CLIENT_CLASSES` map: a client under a per-client HTB rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientClassKey {
    pub client_addr: [u8; 16],
    /// The rule's shape class.
    pub class: u16,
    pub _pad: [u8; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_gives_its_depth_then_refuses() {
        let mut bucket = TokenBucket::full(3000, 0);
        assert!(bucket.take(1500, 1000, 3000, 0));
        assert!(bucket.take(1500, 1000, 3000, 0));
        assert!(!bucket.take(1, 1000, 3000, 0));
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_depth() {
        let mut bucket = TokenBucket::full(0, 0);
        assert!(
            !bucket.take(1000, 1000, 5000, SECOND / 2),
            "half a second: 500 bytes"
        );
        assert!(
            bucket.take(1000, 1000, 5000, SECOND),
            "a second: 1000 bytes"
        );
        assert_eq!(bucket.tokens, 0);
        // An hour idle fills it to its depth, not beyond.
        assert!(bucket.take(0, 1000, 5000, 3600 * SECOND));
        assert_eq!(bucket.tokens, 5000);
    }

    #[test]
    fn many_small_intervals_earn_what_one_long_one_does() {
        // 250 bytes/s, a packet every millisecond: each interval earns a quarter byte.
        let mut bucket = TokenBucket::full(0, 0);
        for ms in 1..=4000u64 {
            bucket.take(0, 250, 10_000, ms * 1_000_000);
        }
        assert_eq!(bucket.tokens, 1000);
    }

    #[test]
    fn a_clock_going_back_adds_nothing() {
        let mut bucket = TokenBucket::full(100, 10 * SECOND);
        assert!(!bucket.take(200, 1000, 10_000, SECOND));
        assert_eq!(bucket.tokens, 100);
    }

    #[test]
    fn allowance_rates() {
        // 20 MB per hour: 5,555 bytes/s.
        assert_eq!(allowance_rate(20_000_000, 3600 * SECOND), 5555);
        assert_eq!(allowance_rate(20_000_000, 0), 0);
        assert_eq!(allowance_rate(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn priorities_and_indices() {
        assert_eq!(htb_priority(3), 0x0001_0003);
        assert_eq!(shaper_index(0, 5), 5);
        assert_eq!(shaper_index(1, 5), 261);
    }

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(core::mem::size_of::<ShapeRule>(), 40);
        assert_eq!(core::mem::size_of::<BucketKey>(), 20);
        assert_eq!(core::mem::size_of::<ClientClassKey>(), 20);
    }
}
