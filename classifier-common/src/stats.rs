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
    /// Later IP fragments no first fragment named a flow for: passed, not attributed.
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
    /// Flows whose first bytes looked like TLS or HTTP but could not be read: given the
    /// policy's `unreadable` category.
    Unreadable = 9,
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
    /// Segments of a flow being classified with a wrong TCP/UDP or IPv4 header checksum:
    /// decoys, ignored.
    DecoyChecksum = 22,
    /// ... with a TTL or hop limit of 1, or other than the SYN's.
    DecoyTtl = 23,
    /// ... with a sequence or acknowledgment number outside the window, or no ACK.
    DecoySequence = 24,
    /// ... with an option or header the server drops them for (old timestamp, MD5,
    /// misplaced hop-by-hop, urgent data).
    DecoyOptions = 25,
    /// Segments whose bytes differed from bytes already seen at the same stream position.
    StreamConflicts = 26,
    /// Flows whose first bytes came out of order and were put back in order.
    Reordered = 27,
    /// ClientHellos joined from several TLS records.
    RecordsJoined = 28,
    /// First IP fragments of a flow's datagrams (the flow is then unreadable if they carry
    /// its first payload).
    FirstFragments = 29,
    /// Later IP fragments counted against the flow their first fragment named.
    LaterFragments = 30,
    /// New flows refused because their client was over its quota of new flows.
    SourceOverQuota = 31,
    /// Packets from outside the LAN prefixes, dropped (spoofed or misrouted).
    ForeignSource = 32,
    /// Reassembly buffers refused because their client was over its quota.
    ReassemblyOverQuota = 33,
    /// QUIC Initials not handed to the daemon because their client was over its quota.
    QuicOverQuota = 34,
    /// Flows the peer cache knew the server of but did not classify: a well-known service
    /// port, or the flow's own bytes named it.
    PeerCacheDeclined = 35,
}

impl Stat {
    /// Number of counters; the size of the `STATS` array.
    pub const COUNT: u32 = 36;

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
        Stat::Unreadable,
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
        Stat::DecoyChecksum,
        Stat::DecoyTtl,
        Stat::DecoySequence,
        Stat::DecoyOptions,
        Stat::StreamConflicts,
        Stat::Reordered,
        Stat::RecordsJoined,
        Stat::FirstFragments,
        Stat::LaterFragments,
        Stat::SourceOverQuota,
        Stat::ForeignSource,
        Stat::ReassemblyOverQuota,
        Stat::QuicOverQuota,
        Stat::PeerCacheDeclined,
    ];

    /// One line for the metric's HELP: what the counter counts.
    pub const fn help(self) -> &'static str {
        match self {
            Stat::Packets => "Every packet either program looked at.",
            Stat::NotIp => {
                "Ethernet frames that carry neither IPv4 nor IPv6 (ARP, LLDP, ...): passed."
            }
            Stat::Fragments => {
                "Later IP fragments no first fragment named a flow for: passed, not attributed."
            }
            Stat::Malformed => {
                "Headers that are truncated or inconsistent: passed, never attributed to a flow."
            }
            Stat::FlowsCreated => "New entries in the flow table.",
            Stat::FlowInsertFailed => {
                "A new flow could not be stored (the kernel refused the insert)."
            }
            Stat::ClassifiedByName => "Flows whose class came from a name (SNI, Host, QUIC).",
            Stat::ClassifiedBittorrent => {
                "Flows classified as BitTorrent (signature, tracker or peer cache)."
            }
            Stat::ClassifiedByPort => "Flows classified by a port rule alone.",
            Stat::Unreadable => {
                "Flows whose first bytes looked like TLS or HTTP but could not be read: given the policy's `unreadable` category."
            }
            Stat::Reassembled => {
                "ClientHellos or requests that spanned several segments and were reassembled."
            }
            Stat::ReassemblyLost => {
                "A flow waiting for reassembly lost its buffer (evicted under load)."
            }
            Stat::QuicToDaemon => "QUIC Initials handed to the daemon.",
            Stat::EventsDropped => {
                "Events dropped because the ring buffer was full (the daemon is behind)."
            }
            Stat::Blocked => "Packets dropped by a block verdict.",
            Stat::TrackerRepliesToDaemon => {
                "BitTorrent tracker replies handed to the daemon for their peer lists."
            }
            Stat::ResetsSent => {
                "Blocked TCP packets answered with a reset to the client (fail-fast)."
            }
            Stat::UnreachablesSent => {
                "Blocked UDP packets answered with ICMP \"administratively prohibited\" (fail-fast)."
            }
            Stat::Shaped => {
                "Packets of shaped flows put into an HTB class (shared or a client's own)."
            }
            Stat::PolicerDropped => {
                "Packets of shaped flows the policer dropped (its bucket was empty)."
            }
            Stat::AllowancePassed => {
                "Packets of shaped flows passed at full speed on the client's short-clip allowance."
            }
            Stat::ClientClassRequested => {
                "Requests to the daemon for a client's own HTB class (per-client rules)."
            }
            Stat::DecoyChecksum => {
                "Segments of a flow being classified with a wrong TCP/UDP or IPv4 header checksum: decoys, ignored."
            }
            Stat::DecoyTtl => {
                "Segments of a flow being classified with a TTL or hop limit of 1, or other than the SYN's: decoys, ignored."
            }
            Stat::DecoySequence => {
                "Segments of a flow being classified with a sequence or acknowledgment number outside the window, or no ACK: decoys, ignored."
            }
            Stat::DecoyOptions => {
                "Segments of a flow being classified with an option or header the server drops them for (old timestamp, MD5, misplaced hop-by-hop, urgent data): decoys, ignored."
            }
            Stat::StreamConflicts => {
                "Segments whose bytes differed from bytes already seen at the same stream position."
            }
            Stat::Reordered => {
                "Flows whose first bytes came out of order and were put back in order."
            }
            Stat::RecordsJoined => "ClientHellos joined from several TLS records.",
            Stat::FirstFragments => {
                "First IP fragments of a flow's datagrams (the flow is then unreadable if they carry its first payload)."
            }
            Stat::LaterFragments => {
                "Later IP fragments counted against the flow their first fragment named."
            }
            Stat::SourceOverQuota => {
                "New flows refused because their client was over its quota of new flows."
            }
            Stat::ForeignSource => {
                "Packets from outside the LAN prefixes, dropped (spoofed or misrouted)."
            }
            Stat::ReassemblyOverQuota => {
                "Reassembly buffers refused because their client was over its quota."
            }
            Stat::QuicOverQuota => {
                "QUIC Initials not handed to the daemon because their client was over its quota."
            }
            Stat::PeerCacheDeclined => {
                "Flows the peer cache knew the server of but did not classify: a well-known service port, or the flow's own bytes named it."
            }
        }
    }

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
            Stat::Unreadable => "unreadable",
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
            Stat::DecoyChecksum => "decoy_checksum",
            Stat::DecoyTtl => "decoy_ttl",
            Stat::DecoySequence => "decoy_sequence",
            Stat::DecoyOptions => "decoy_options",
            Stat::StreamConflicts => "stream_conflicts",
            Stat::Reordered => "reordered",
            Stat::RecordsJoined => "records_joined",
            Stat::FirstFragments => "first_fragments",
            Stat::LaterFragments => "later_fragments",
            Stat::SourceOverQuota => "source_over_quota",
            Stat::ForeignSource => "foreign_source",
            Stat::ReassemblyOverQuota => "reassembly_over_quota",
            Stat::QuicOverQuota => "quic_over_quota",
            Stat::PeerCacheDeclined => "peer_cache_declined",
        }
    }
}
