//! Settings the policy file gives other parts of the daemon, validated: the types live
//! here, with the policy that reads them, so that the policy needs nothing from the parts
//! that use them (docs/architecture.md, layers).

use std::time::Duration;

/// `[degradation]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct DegradationPolicy {
    /// Interval lengths, shortest first.
    pub intervals: Vec<Duration>,
    /// The link's capacity each way (bits per second), when known: shares are of the link;
    /// without it, of the traffic seen.
    pub link_download_bps: Option<u64>,
    pub link_upload_bps: Option<u64>,
    /// Categories watched for taking the link (streaming, file sharing).
    pub watched_categories: Vec<String>,
    /// Their share of the link above which an event is logged.
    pub alert_share: f64,
}

impl Default for DegradationPolicy {
    fn default() -> Self {
        Self {
            intervals: vec![Duration::from_secs(10), Duration::from_secs(300)],
            link_download_bps: None,
            link_upload_bps: None,
            watched_categories: ["streaming-video", "streaming-audio", "file-sharing"]
                .map(String::from)
                .to_vec(),
            alert_share: 0.5,
        }
    }
}

/// When a flow counts as ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndRules {
    /// No packet either way for this long.
    pub idle_timeout: Duration,
    /// After a FIN both ways or a reset, how long to wait for the last packets (the final
    /// ACK, a retransmitted FIN) before taking the flow out: taken out earlier, they would
    /// start a new, unclassified flow.
    pub close_linger: Duration,
}

impl Default for EndRules {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            close_linger: Duration::from_secs(5),
        }
    }
}
