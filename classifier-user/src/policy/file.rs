//! The policy file as written (TOML), before validation. See `policy/council-default.toml`
//! for a commented example of every section.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub site: SiteSection,
    /// Categories by name, in the order written (ids follow that order).
    #[serde(default)]
    pub categories: IndexMap<String, CategorySection>,
    /// Applications by name: named sets of domains inside a category.
    #[serde(default)]
    pub apps: IndexMap<String, AppSection>,
    /// Groups of clients by name.
    #[serde(default)]
    pub groups: IndexMap<String, super::groups::GroupSection>,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<super::rules::RuleSection>,
    /// Exceptions granted in the policy itself (the CLI keeps its own in an exceptions file).
    #[serde(default)]
    pub exceptions: Vec<super::exceptions::ExceptionSection>,
    /// When which period is in force; absent: the council schedule (see
    /// [`super::schedule::ScheduleSection::default`]).
    pub schedule: Option<super::schedule::ScheduleSection>,
    #[serde(default)]
    pub quic: QuicSection,
    #[serde(default)]
    pub bittorrent: BittorrentSection,
    #[serde(default)]
    pub shaping: ShapingSection,
    #[serde(default)]
    pub records: RecordsSection,
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default)]
    pub degradation: DegradationSection,
    #[serde(default)]
    pub datapath: DatapathSection,
}

/// `[datapath]`: what the gateway's LAN is, and what one client may take of the tables all
/// clients share (so that one host flooding the gateway cannot crowd the others out).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathSection {
    /// The prefixes behind the LAN interface (`192.0.2.0/24`, `2001:db8:1::/48`): flows
    /// are made only for these sources, and packets from others (spoofed, misrouted) are
    /// dropped. Empty: any source.
    #[serde(default)]
    pub lan_prefixes: Vec<String>,
    /// Per client: new flows a second, and how many at once. 0: no limit.
    #[serde(default = "default_new_flows_per_second")]
    pub new_flows_per_second: u32,
    #[serde(default = "default_new_flows_burst")]
    pub new_flows_burst: u32,
    /// Per client: reassembly buffers (first bytes over several segments) a second, and at
    /// once.
    #[serde(default = "default_reassemblies_per_second")]
    pub reassemblies_per_second: u16,
    #[serde(default = "default_reassemblies_burst")]
    pub reassemblies_burst: u16,
    /// Per client: QUIC Initials handed to the daemon to read a name from, a second, and
    /// at once. Beyond them a QUIC flow is QUIC of no known name.
    #[serde(default = "default_quic_per_second")]
    pub quic_initials_per_second: u16,
    #[serde(default = "default_quic_burst")]
    pub quic_initials_burst: u16,
}

impl Default for DatapathSection {
    fn default() -> Self {
        Self {
            lan_prefixes: Vec::new(),
            new_flows_per_second: default_new_flows_per_second(),
            new_flows_burst: default_new_flows_burst(),
            reassemblies_per_second: default_reassemblies_per_second(),
            reassemblies_burst: default_reassemblies_burst(),
            quic_initials_per_second: default_quic_per_second(),
            quic_initials_burst: default_quic_burst(),
        }
    }
}

fn default_new_flows_per_second() -> u32 {
    classifier_common::config::Config::default().flow_rate
}

fn default_new_flows_burst() -> u32 {
    classifier_common::config::Config::default().flow_burst
}

fn default_reassemblies_per_second() -> u16 {
    classifier_common::config::Config::default().reassembly_rate
}

fn default_reassemblies_burst() -> u16 {
    classifier_common::config::Config::default().reassembly_burst
}

fn default_quic_per_second() -> u16 {
    classifier_common::config::Config::default().quic_rate
}

fn default_quic_burst() -> u16 {
    classifier_common::config::Config::default().quic_burst
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    #[serde(default)]
    pub name: String,
    /// IANA time zone the schedules are written in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

impl Default for SiteSection {
    fn default() -> Self {
        Self {
            name: String::new(),
            timezone: default_timezone(),
        }
    }
}

fn default_timezone() -> String {
    "Europe/London".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategorySection {
    #[serde(default)]
    pub description: String,
    /// Domains (and everything under them): `example.com` covers `www.example.com`.
    #[serde(default)]
    pub domains: Vec<String>,
    /// UT1/Shallalist-style lists: a directory holding a `domains` file, or a file; one
    /// domain per line, `#` comments. Relative paths are from the policy file's directory.
    #[serde(default)]
    pub lists: Vec<PathBuf>,
    /// Ports for flows no name classifies: `tcp/1935`, `udp/6881-6889`, `tcp+udp/6969`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Built-in protocol detections that put a flow in this category: `bittorrent`, `quic`.
    #[serde(default)]
    pub protocols: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub category: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicSection {
    /// `classify`: the daemon reads the server name from the Initial (default);
    /// `protocol-only`: every QUIC flow gets the category of the `quic` protocol.
    #[serde(default = "default_quic_mode")]
    pub mode: String,
    /// Drop a QUIC flow's packets while its name is being read (the browser retransmits).
    #[serde(default)]
    pub hold_until_classified: bool,
}

impl Default for QuicSection {
    fn default() -> Self {
        Self {
            mode: default_quic_mode(),
            hold_until_classified: false,
        }
    }
}

fn default_quic_mode() -> String {
    "classify".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BittorrentSection {
    /// How long a peer seen in BitTorrent traffic keeps later flows to it BitTorrent.
    #[serde(default = "default_peer_ttl")]
    pub peer_ttl: String,
}

impl Default for BittorrentSection {
    fn default() -> Self {
        Self {
            peer_ttl: default_peer_ttl(),
        }
    }
}

fn default_peer_ttl() -> String {
    "10 minutes".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingSection {
    /// `htb`: HTB classes on the LAN and WAN interfaces' egress (default; TCP-friendly,
    /// queues instead of dropping); `policer`: a token bucket in the datapath that drops
    /// what exceeds the rate, where HTB cannot be used (another qdisc owns the interface).
    #[serde(default = "default_shaping_method")]
    pub method: String,
}

impl Default for ShapingSection {
    fn default() -> Self {
        Self {
            method: default_shaping_method(),
        }
    }
}

fn default_shaping_method() -> String {
    "htb".into()
}

/// `[records]`: flow records, when a flow counts as ended, and how long records keep who
/// made them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsSection {
    /// A flow with no packet either way for this long has ended (`5 minutes`).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// How long records keep the client's address and MAC, in units spelled out
    /// (`14 months`, the councils' limit; `420 days`). Longer than 14 months only with
    /// `retention_override_reason`.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Why this site keeps records longer than the councils' 14 months (a decision's
    /// reference, who took it). Refused when the retention is within 14 months.
    pub retention_override_reason: Option<String>,
    /// `delete` (volume kept as daily totals) or `anonymise` (client removed, the rest
    /// kept).
    #[serde(default = "default_after_retention")]
    pub after_retention: String,
    /// How long the bandwidth-degradation log keeps its reports (their top clients go at
    /// `retention` already, whichever is first).
    #[serde(default = "default_degradation_retention")]
    pub degradation_retention: String,
}

impl Default for RecordsSection {
    fn default() -> Self {
        Self {
            idle_timeout: default_idle_timeout(),
            retention: default_retention(),
            retention_override_reason: None,
            after_retention: default_after_retention(),
            degradation_retention: default_degradation_retention(),
        }
    }
}

fn default_degradation_retention() -> String {
    "90 days".into()
}

fn default_idle_timeout() -> String {
    "5 minutes".into()
}

fn default_retention() -> String {
    "14 months".into()
}

fn default_after_retention() -> String {
    "delete".into()
}

/// `[export]`: where ended flows are sent as they are recorded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// An IPFIX collector (`ADDRESS:PORT`, UDP; nfcapd, GoFlow2, ElastiFlow): every ended
    /// flow is sent there too, and long flows while they last. Absent: no live export.
    pub ipfix_collector: Option<String>,
    /// The site's IANA Private Enterprise Number: the fields IANA has no element for
    /// (classification method, exact verdict, group, evasion) are exported under it.
    /// Absent: those fields are not exported.
    pub ipfix_enterprise_number: Option<u32>,
    /// How often a flow that lasts is reported while it lasts (`30 minutes`); each report counts
    /// what crossed since the one before.
    pub ipfix_active_timeout: Option<String>,
}

/// `[degradation]`: the bandwidth-degradation log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradationSection {
    /// Interval lengths (`10s`, `5m`).
    #[serde(default = "default_degradation_intervals")]
    pub intervals: Vec<String>,
    /// The link's capacity each way (`100mbit`): shares are then of the link, not of the
    /// traffic seen.
    pub link_download: Option<String>,
    pub link_upload: Option<String>,
    /// Categories whose share of the link is watched; by default those of
    /// streaming-video, streaming-audio and file-sharing the policy has.
    pub watched_categories: Option<Vec<String>>,
    /// Above this share (0..1) of the link, a watched category raises an event.
    #[serde(default = "default_alert_share")]
    pub alert_share: f64,
}

impl Default for DegradationSection {
    fn default() -> Self {
        Self {
            intervals: default_degradation_intervals(),
            link_download: None,
            link_upload: None,
            watched_categories: None,
            alert_share: default_alert_share(),
        }
    }
}

fn default_degradation_intervals() -> Vec<String> {
    vec!["10s".into(), "5 minutes".into()]
}

fn default_alert_share() -> f64 {
    super::settings::DegradationPolicy::default().alert_share
}
