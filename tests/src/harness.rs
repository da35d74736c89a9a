//! The real datapath under `BPF_PROG_TEST_RUN` with a policy installed, and what the daemon
//! does with its events: frames in; verdicts, flow records and counters out.

use aya::maps::{MapData, RingBuf};
use classifier_common::{flow::FlowKey, stats::Stat};
use classifier_user::{
    events::{self, Event, Learned},
    flows::{DatapathClock, FlowNames, FlowRecord, names},
    loader::Datapath,
    metrics,
    policy::Policy,
};

use crate::{frames::Way, run::run_frame};

/// Monday 23 November 2026, 10:00 GMT: working hours under the council policy.
pub const MONDAY_AT_WORK: &str = "2026-11-23T10:00:00Z";

/// A datapath with a policy's tables, the daemon's view of its events.
pub struct Harness {
    pub datapath: Datapath,
    pub policy: Policy,
    pub learned: Learned,
    events: RingBuf<MapData>,
}

impl Harness {
    /// `policy`'s classes; no decisions (everything allowed) until [`Harness::at`].
    pub fn new(policy: Policy) -> Self {
        let mut datapath = Datapath::load().expect("the kernel loads the datapath");
        datapath
            .install_tables(&policy.classes, &policy.datapath)
            .expect("the policy's tables go in");
        let events = datapath.take_events().expect("the event ring");
        Self {
            datapath,
            policy,
            learned: Learned::default(),
            events,
        }
    }

    /// The default council policy in force in `period` at `at` (RFC 3339).
    pub fn council(period: &str, at: &str) -> Self {
        let mut harness = Self::new(Policy::default_council());
        harness.at(period, at);
        harness
    }

    /// Puts the policy's decisions for `period` at `at` in force.
    pub fn at(&mut self, period: &str, at: &str) {
        let tables = self
            .policy
            .decision_tables(period, at.parse().expect("a timestamp"));
        self.datapath
            .swap_policy(&tables)
            .expect("the decisions go in");
    }

    /// Runs the frames, the daemon handling the events after each; returns each frame's
    /// verdict and the events.
    pub fn send(&mut self, frames: &[(Way, Vec<u8>)]) -> (Vec<u32>, Vec<Event>) {
        let mut verdicts = Vec::new();
        let mut seen = Vec::new();
        for (way, frame) in frames {
            verdicts.push(run_frame(&mut self.datapath, *way, frame));
            while let Some(record) = self.events.next() {
                if let Some(event) = events::decode(&record) {
                    seen.push(event.clone());
                    self.learned.apply(event, &mut self.datapath, &self.policy);
                }
            }
        }
        (verdicts, seen)
    }

    /// The flow's record as the daemon would write it now.
    pub fn record(&self, key: &FlowKey) -> FlowRecord {
        let table = &self.datapath.maps().flows;
        let entry = table
            .get(key, 0)
            .unwrap_or_else(|e| panic!("no flow {key:?}: {e}"));
        FlowRecord::from_entry(
            key,
            &entry,
            &DatapathClock::now().expect("the clocks"),
            &self.policy,
            self.learned.names.get(key),
        )
    }

    /// The flow's record as a daemon that heard none of the events would write it (one
    /// started after a crash): its names from the kernel's `NAMES` alone.
    pub fn record_from_kernel(&self, key: &FlowKey) -> FlowRecord {
        let table = &self.datapath.maps().flows;
        let entry = table
            .get(key, 0)
            .unwrap_or_else(|e| panic!("no flow {key:?}: {e}"));
        let kept = &self.datapath.maps().names;
        let names = names::of_flow(&FlowNames::default(), Some(kept), key, &entry);
        FlowRecord::from_entry(
            key,
            &entry,
            &DatapathClock::now().expect("the clocks"),
            &self.policy,
            names.as_ref(),
        )
    }

    /// A global counter's value.
    pub fn stat(&self, stat: Stat) -> u64 {
        metrics::read_stats(&self.datapath.maps().stats)
            .expect("the counters read")
            .get(stat)
    }
}
