//! Global datapath counters: what the programs saw that belongs to no flow, and how the flow
//! table is doing. One per-CPU array slot per counter; the daemon sums the CPUs.

/// Index of a counter in the `STATS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Every packet either program looked at.
    Packets = 0,
    /// Ethernet frames that carry neither IPv4 nor IPv6 (ARP, LLDP, ...): passed.
    NotIp = 1,
    /// IP fragments: passed untouched, not attributed to a flow (no ports to key them by).
    Fragments = 2,
    /// Headers that are truncated or inconsistent: passed, never attributed to a flow.
    Malformed = 3,
    /// New entries in the flow table.
    FlowsCreated = 4,
    /// A new flow could not be stored (the kernel refused the insert).
    FlowInsertFailed = 5,
    /// Flows whose class came from a name (SNI, Host, QUIC).
    ClassifiedByName = 6,
    /// Flows classified as BitTorrent (signature, tracker or peer cache).
    ClassifiedBittorrent = 7,
    /// Flows classified by a port rule alone.
    ClassifiedByPort = 8,
    /// ClientHellos seen but not readable (out of order, record-fragmented, too large).
    TlsUnparsed = 9,
    /// ClientHellos or requests that spanned several segments and were reassembled.
    Reassembled = 10,
    /// A flow waiting for reassembly lost its buffer (evicted under load).
    ReassemblyLost = 11,
    /// QUIC Initials handed to the daemon.
    QuicToDaemon = 12,
    /// Events dropped because the ring buffer was full (the daemon is behind).
    EventsDropped = 13,
    /// Packets dropped by a block verdict.
    Blocked = 14,
    /// BitTorrent tracker replies handed to the daemon for their peer lists.
    TrackerRepliesToDaemon = 15,
    /// Blocked TCP packets answered with a reset to the client (fail-fast).
    ResetsSent = 16,
    /// Blocked UDP packets answered with ICMP "administratively prohibited" (fail-fast).
    UnreachablesSent = 17,
    /// Packets of shaped flows put into an HTB class (shared or a client's own).
    Shaped = 18,
    /// Packets of shaped flows the policer dropped (its bucket was empty).
    PolicerDropped = 19,
    /// Packets of shaped flows passed at full speed on the client's short-clip allowance.
    AllowancePassed = 20,
    /// Requests to the daemon for a client's own HTB class (per-client rules).
    ClientClassRequested = 21,
}

impl Stat {
    /// Number of counters; the size of the `STATS` array.
    pub const COUNT: u32 = 22;

    /// All counters, in index order.
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Packets,
        Stat::NotIp,
        Stat::Fragments,
        Stat::Malformed,
        Stat::FlowsCreated,
        Stat::FlowInsertFailed,
        Stat::ClassifiedByName,
        Stat::ClassifiedBittorrent,
        Stat::ClassifiedByPort,
        Stat::TlsUnparsed,
        Stat::Reassembled,
        Stat::ReassemblyLost,
        Stat::QuicToDaemon,
        Stat::EventsDropped,
        Stat::Blocked,
        Stat::TrackerRepliesToDaemon,
        Stat::ResetsSent,
        Stat::UnreachablesSent,
        Stat::Shaped,
        Stat::PolicerDropped,
        Stat::AllowancePassed,
        Stat::ClientClassRequested,
    ];

    /// Stable snake_case name, used in logs, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Packets => "packets",
            Stat::NotIp => "not_ip",
            Stat::Fragments => "fragments",
            Stat::Malformed => "malformed",
            Stat::FlowsCreated => "flows_created",
            Stat::FlowInsertFailed => "flow_insert_failed",
            Stat::ClassifiedByName => "classified_by_name",
            Stat::ClassifiedBittorrent => "classified_bittorrent",
            Stat::ClassifiedByPort => "classified_by_port",
            Stat::TlsUnparsed => "tls_unparsed",
            Stat::Reassembled => "reassembled",
            Stat::ReassemblyLost => "reassembly_lost",
            Stat::QuicToDaemon => "quic_to_daemon",
            Stat::EventsDropped => "events_dropped",
            Stat::Blocked => "blocked",
            Stat::TrackerRepliesToDaemon => "tracker_replies_to_daemon",
            Stat::ResetsSent => "resets_sent",
            Stat::UnreachablesSent => "unreachables_sent",
            Stat::Shaped => "shaped",
            Stat::PolicerDropped => "policer_dropped",
            Stat::AllowancePassed => "allowance_passed",
            Stat::ClientClassRequested => "client_class_requested",
        }
    }
}
