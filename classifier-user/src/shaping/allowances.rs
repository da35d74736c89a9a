//! What clients have left of the rules' allowances, read from the datapath's `BUCKETS`: the
//! volume allowance's token buckets and the time allowance's minute counts, for `status`
//! and `policy explain`.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv6Addr},
};

use aya::maps::{HashMap, MapData};
use classifier_common::shaping::{
    BucketKey, MINUTE_NS, MinuteCount, ShapeRule, TokenBucket, bucket_kind,
};

use crate::{
    flows::{DatapathClock, datapath_clock_ns},
    loader::Datapath,
    policy::{Policy, Rule, allowances::AllowanceLeft, decide::shape_class},
};

/// Reads the buckets once, with both clocks.
struct Reading<'a> {
    buckets: &'a HashMap<MapData, BucketKey, TokenBucket>,
    clock: DatapathClock,
    now_ns: u64,
}

impl<'a> Reading<'a> {
    fn new(datapath: &'a Datapath) -> anyhow::Result<Self> {
        Ok(Self {
            buckets: &datapath.maps().buckets,
            clock: DatapathClock::now()?,
            now_ns: datapath_clock_ns()?,
        })
    }

    fn bucket(&self, client_addr: [u8; 16], class: u16, kind: u8) -> Option<TokenBucket> {
        let key = BucketKey {
            client_addr,
            class,
            kind,
            _pad: 0,
        };
        self.buckets.get(&key, 0).ok()
    }

    /// `rule`'s allowances for the client at `client_addr` (all zero: a shared rule's
    /// minutes), as the datapath has counted them.
    fn left(&self, rule: &Rule, shaper: &ShapeRule, client_addr: [u8; 16]) -> AllowanceLeft {
        let allowances = rule
            .action
            .allowances()
            .expect("only rules with allowances are measured");
        let class = shape_class(rule);
        let client = (client_addr != [0; 16]).then(|| ip_of(client_addr));
        let mut left = AllowanceLeft::unused(rule.index + 1, client, &allowances);
        if allowances.time.is_some() {
            let minutes_key = if allowances.per_client {
                client_addr
            } else {
                [0; 16]
            };
            let window_ns = u64::from(shaper.allowance_window_minutes) * MINUTE_NS;
            left = match self.bucket(minutes_key, class, bucket_kind::MINUTES) {
                Some(bucket) => {
                    let count = MinuteCount::from(bucket);
                    if count.window_over(self.now_ns, window_ns) {
                        left.with_minutes_used(0, None)
                    } else {
                        let ends = self.clock.timestamp(count.window_start_ns + window_ns);
                        left.with_minutes_used(count.minutes, Some(ends))
                    }
                }
                None => left.with_minutes_used(0, None),
            };
        }
        if allowances.volume.is_some() && client_addr != [0; 16] {
            let depth = shaper.allowance_bytes;
            let bytes = match self.bucket(client_addr, class, bucket_kind::ALLOWANCE) {
                Some(mut bucket) => {
                    // What the next packet would find: refilled to now, nothing taken.
                    bucket.take(0, shaper.allowance_refill, depth, self.now_ns);
                    bucket.tokens
                }
                None => depth,
            };
            left = left.with_bytes_left(bytes);
        }
        left
    }
}

/// What `client` has left of `rule`'s allowances now; `None` when the rule has none.
pub fn left_for(
    datapath: &Datapath,
    policy: &Policy,
    client: IpAddr,
    rule: &Rule,
) -> anyhow::Result<Option<AllowanceLeft>> {
    let Some(shaper) = shaper_of(policy, rule) else {
        return Ok(None);
    };
    if rule.action.allowances().is_none() {
        return Ok(None);
    }
    let reading = Reading::new(datapath)?;
    Ok(Some(reading.left(rule, &shaper, addr_of(client))))
}

/// Every client (and shared rule) the datapath has counted allowances for under the
/// policy's rules, fewest minutes or bytes left first.
pub fn all_left(datapath: &Datapath, policy: &Policy) -> anyhow::Result<Vec<AllowanceLeft>> {
    let reading = Reading::new(datapath)?;
    let counted: BTreeSet<([u8; 16], u16)> = reading
        .buckets
        .keys()
        .filter_map(Result::ok)
        .filter(|key| matches!(key.kind, bucket_kind::ALLOWANCE | bucket_kind::MINUTES))
        .map(|key| (key.client_addr, key.class))
        .collect();
    let mut lefts = Vec::new();
    for (client_addr, class) in counted {
        let Some(rule) = policy.rules.iter().find(|r| shape_class(r) == class) else {
            continue;
        };
        let (Some(shaper), Some(_)) = (shaper_of(policy, rule), rule.action.allowances()) else {
            continue;
        };
        lefts.push(reading.left(rule, &shaper, client_addr));
    }
    lefts.sort_by_key(|l| {
        (
            !l.spent,
            l.minutes_left.unwrap_or(u32::MAX),
            l.bytes_left.unwrap_or(u64::MAX),
        )
    });
    Ok(lefts)
}

fn shaper_of(policy: &Policy, rule: &Rule) -> Option<ShapeRule> {
    let class = shape_class(rule);
    policy
        .shapers()
        .into_iter()
        .find_map(|(c, shaper)| (c == class).then_some(shaper))
}

fn addr_of(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}
