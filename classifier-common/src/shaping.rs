//! Shaping as the datapath holds it: one [`ShapeRule`] per shaping rule of the policy,
//! token buckets for the short-clip allowance and the policer fallback, and the per-client
//! HTB classes the daemon makes.
//!
//! A shaped packet either goes into an HTB class (the TC program sets `skb->priority` to
//! the class id, which HTB reads before its filters), or, with the policer, passes while
//! its bucket has tokens and is dropped when it has none. The short-clip allowance is a
//! bucket too: while a client's allowance has bytes left, its packets pass unshaped. The
//! time allowance ([`MinuteCount`]) counts the minutes in which a client moved traffic under
//! the rule: while they are within the allowance, its packets pass unshaped.
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
    /// The rule has a time allowance (`allowance_minutes` per `allowance_window_minutes`).
    pub const TIME_ALLOWANCE: u32 = 1 << 3;
    /// Once the allowances are spent, drop instead of shaping (`action = "block"` with an
    /// allowance): the rule has no rate.
    pub const BLOCK_WHEN_SPENT: u32 = 1 << 4;
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
    /// The time allowance: this many minutes with traffic at full speed...
    pub allowance_minutes: u16,
    /// ...in a window of this many minutes from the first of them ([`MinuteCount`]).
    pub allowance_window_minutes: u16,
}

impl ShapeRule {
    /// Whether the rule holds what the daemon wrote for a shape rule; an empty slot (no
    /// rule with this class in the table in force) shapes nothing.
    #[inline(always)]
    pub const fn is_set(&self) -> bool {
        self.rate_bytes != 0 || self.flags & shape_flags::BLOCK_WHEN_SPENT != 0
    }
}

/// What a [`BucketKey`] bucket meters.
pub mod bucket_kind {
    /// A client's short-clip allowance under a rule.
    pub const ALLOWANCE: u8 = 1;
    /// The policer's bucket of a rule (shared: client all zero) or of a client under it.
    pub const POLICER: u8 = 2;
    /// The minutes counted under a rule's time allowance ([`super::MinuteCount`]): a
    /// client's (per-client rules), or everyone's under the rule (shared: client all zero).
    pub const MINUTES: u8 = 3;
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

/// A minute of use: the first packet after the previous minute ended starts the next.
pub const MINUTE_NS: u64 = 60_000_000_000;
const MINUTE_MS: u32 = 60_000;

/// The minutes in which a client (or, under a shared rule, anyone) moved traffic under a
/// rule with a time allowance, in its current window.
///
/// A minute of use starts with the first packet after the previous one ended and lasts 60 s,
/// so a 50-second clip is one minute wherever it falls on the clock, and minutes without a
/// packet are not counted. A window starts with the first packet after the previous window
/// ended and lasts the allowance's period (an hour, a day): the datapath has no calendar, so
/// "10 minutes/day" is 10 minutes in the 24 hours from the first of them.
///
/// Kept in a `BUCKETS` entry of kind [`bucket_kind::MINUTES`]: the same 16 bytes as a
/// [`TokenBucket`], converted by the `From` impls (`updated_ns` holds the window's start,
/// `tokens` the minutes counted and when the current one began). Updates from several CPUs
/// at once may lose one: the count then errs by a minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteCount {
    /// CLOCK_MONOTONIC ns of the window's first packet.
    pub window_start_ns: u64,
    /// Minutes of use counted in the window, the one in progress included.
    pub minutes: u32,
    /// When the minute in progress began, ms after `window_start_ns`.
    pub minute_start_ms: u32,
}

impl MinuteCount {
    /// A window and its first minute, started by a packet at `now_ns`.
    pub const fn starting(now_ns: u64) -> Self {
        Self {
            window_start_ns: now_ns,
            minutes: 1,
            minute_start_ms: 0,
        }
    }

    /// Counts a packet at `now_ns` under an allowance of `allowed` minutes per window of
    /// `window_ns`: it starts a new window when the last one has ended, a new minute when
    /// the last one has. Returns whether the packet is within the allowance.
    #[inline(always)]
    pub fn count(&mut self, now_ns: u64, allowed: u32, window_ns: u64) -> bool {
        // A clock that went back (another CPU's earlier reading) is the window's start.
        let into_window = now_ns.saturating_sub(self.window_start_ns);
        if into_window >= window_ns {
            *self = Self::starting(now_ns);
        } else {
            // Windows are at most 65,535 minutes (u16): 3.9e9 ms fits a u32.
            let into_window_ms = (into_window / 1_000_000) as u32;
            if into_window_ms.saturating_sub(self.minute_start_ms) >= MINUTE_MS {
                self.minutes = self.minutes.saturating_add(1);
                self.minute_start_ms = into_window_ms;
            }
        }
        self.minutes <= allowed
    }

    /// Minutes left of `allowed` (0 once spent; the one in progress counts as used).
    pub const fn left(&self, allowed: u32) -> u32 {
        allowed.saturating_sub(self.minutes)
    }

    /// Whether the window that began at `window_start_ns` has ended at `now_ns`: the next
    /// packet starts a fresh one.
    pub const fn window_over(&self, now_ns: u64, window_ns: u64) -> bool {
        now_ns.saturating_sub(self.window_start_ns) >= window_ns
    }
}

impl From<TokenBucket> for MinuteCount {
    fn from(bucket: TokenBucket) -> Self {
        Self {
            window_start_ns: bucket.updated_ns,
            minutes: (bucket.tokens >> 32) as u32,
            minute_start_ms: bucket.tokens as u32,
        }
    }
}

impl From<MinuteCount> for TokenBucket {
    fn from(count: MinuteCount) -> Self {
        Self {
            tokens: (count.minutes as u64) << 32 | count.minute_start_ms as u64,
            updated_ns: count.window_start_ns,
        }
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
    use std::{vec, vec::Vec};

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

    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;

    /// Counts packets at these times (ns) under `allowed` minutes per `window`; returns
    /// whether each was within the allowance.
    fn count_at(times: &[u64], allowed: u32, window: u64) -> (MinuteCount, Vec<bool>) {
        let mut count = MinuteCount::starting(times[0]);
        let mut within = vec![count.minutes <= allowed];
        for &t in &times[1..] {
            within.push(count.count(t, allowed, window));
        }
        (count, within)
    }

    #[test]
    fn a_minute_of_use_runs_sixty_seconds_from_its_first_packet() {
        // Starting at 50 s past a clock minute: 59.9 s later is the same minute of use,
        // 60 s later the second. The clock's minutes do not matter.
        let start = 1000 * SECOND + 50 * SECOND;
        let (count, within) = count_at(
            &[start, start + 10 * SECOND, start + 59_900_000_000],
            1,
            HOUR,
        );
        assert_eq!(within, [true, true, true]);
        assert_eq!(count.minutes, 1);
        let (count, within) = count_at(&[start, start + MINUTE], 1, HOUR);
        assert_eq!(within, [true, false], "the second minute is beyond one");
        assert_eq!(count.minutes, 2);
        assert_eq!(count.left(1), 0);
    }

    #[test]
    fn idle_minutes_are_not_counted() {
        // Three short bursts 20 minutes apart are three minutes, not forty-one.
        let (count, within) = count_at(
            &[
                0,
                30 * SECOND,
                20 * MINUTE,
                20 * MINUTE + 5 * SECOND,
                40 * MINUTE,
            ],
            3,
            HOUR,
        );
        assert_eq!(count.minutes, 3);
        assert!(within.iter().all(|w| *w), "{within:?}");
        assert_eq!(count.left(3), 0);
        // The next minute of use is the fourth: beyond the allowance.
        let mut count = count;
        assert!(!count.count(50 * MINUTE, 3, HOUR));
    }

    #[test]
    fn a_minute_begun_later_does_not_restart_the_one_in_progress() {
        // Packets every 10 s for five minutes: five minutes of use, no more.
        let times: Vec<u64> = (0..30).map(|i| i * 10 * SECOND).collect();
        let (count, _) = count_at(&times, 10, HOUR);
        assert_eq!(count.minutes, 5);
    }

    #[test]
    fn the_window_rolls_over_an_hour_or_a_day_after_its_first_minute() {
        let start = 7 * HOUR;
        // Spent within the hour...
        let (mut count, within) = count_at(&[start, start + MINUTE, start + 2 * MINUTE], 2, HOUR);
        assert_eq!(within, [true, true, false]);
        assert!(
            !count.count(start + HOUR - SECOND, 2, HOUR),
            "still this hour"
        );
        assert!(!count.window_over(start + HOUR - SECOND, HOUR));
        // ...and whole again once the hour from its first minute is over.
        assert!(count.window_over(start + HOUR, HOUR));
        assert!(count.count(start + HOUR, 2, HOUR), "a new window");
        assert_eq!(count, MinuteCount::starting(start + HOUR));
        // A day's window: 23 hours later the minutes are still spent.
        let day = 24 * HOUR;
        let (mut count, _) = count_at(&[start, start + MINUTE], 1, day);
        assert!(!count.count(start + 23 * HOUR, 1, day));
        assert!(count.count(start + day, 1, day));
    }

    #[test]
    fn a_clock_going_back_counts_nothing_new() {
        let mut count = MinuteCount::starting(10 * MINUTE);
        assert!(count.count(5 * MINUTE, 1, HOUR));
        assert_eq!(count, MinuteCount::starting(10 * MINUTE));
    }

    #[test]
    fn minute_counts_survive_the_trip_through_a_token_bucket() {
        let count = MinuteCount {
            window_start_ns: u64::MAX - 5,
            minutes: u32::MAX,
            minute_start_ms: 3_900_000_000,
        };
        assert_eq!(MinuteCount::from(TokenBucket::from(count)), count);
        let fresh = MinuteCount::starting(42);
        assert_eq!(MinuteCount::from(TokenBucket::from(fresh)), fresh);
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
