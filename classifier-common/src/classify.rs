//! What the datapath learns about a flow: how it was classified, what it is, and where the
//! classification stands.

/// How a flow got its class ([`crate::flow::FlowEntry::method`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Not classified (yet).
    None = 0,
    /// TLS ClientHello server name.
    Sni = 1,
    /// HTTP request Host header.
    Host = 2,
    /// QUIC Initial: the daemon decrypted the ClientHello and read its server name.
    Quic = 3,
    /// BitTorrent peer-wire handshake (`\x13BitTorrent protocol`).
    BtHandshake = 4,
    /// BitTorrent DHT (bencoded KRPC over UDP).
    BtDht = 5,
    /// BitTorrent uTP (BEP 29) connection set-up.
    BtUtp = 6,
    /// BitTorrent tracker: HTTP announce (`info_hash=`) or UDP connect (BEP 15).
    BtTracker = 7,
    /// A peer learnt from earlier BitTorrent traffic (also catches MSE/PE-encrypted flows).
    PeerCache = 8,
    /// A (protocol, port) rule.
    Port = 9,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::None,
        Method::Sni,
        Method::Host,
        Method::Quic,
        Method::BtHandshake,
        Method::BtDht,
        Method::BtUtp,
        Method::BtTracker,
        Method::PeerCache,
        Method::Port,
    ];

    pub const fn from_u8(value: u8) -> Method {
        match value {
            1 => Method::Sni,
            2 => Method::Host,
            3 => Method::Quic,
            4 => Method::BtHandshake,
            5 => Method::BtDht,
            6 => Method::BtUtp,
            7 => Method::BtTracker,
            8 => Method::PeerCache,
            9 => Method::Port,
            _ => Method::None,
        }
    }

    /// Stable kebab-case name, as reports and JSON show it.
    pub const fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Sni => "sni",
            Method::Host => "host",
            Method::Quic => "quic",
            Method::BtHandshake => "bt-handshake",
            Method::BtDht => "bt-dht",
            Method::BtUtp => "bt-utp",
            Method::BtTracker => "bt-tracker",
            Method::PeerCache => "peer-cache",
            Method::Port => "port",
        }
    }
}

/// Built-in application (protocol) ids. Policy-defined applications (youtube, netflix, ...)
/// are numbered from [`app::FIRST_POLICY_APP`].
pub mod app {
    pub const UNKNOWN: u16 = 0;
    pub const TLS: u16 = 1;
    pub const HTTP: u16 = 2;
    pub const QUIC: u16 = 3;
    pub const BITTORRENT: u16 = 4;
    /// Not an application a flow is given: the index, in the protocol → category table, of
    /// the category for flows whose first bytes look like TLS or HTTP but cannot be read
    /// (policy: `protocols = ["unreadable"]`).
    pub const UNREADABLE: u16 = 5;
    /// Number of built-in protocol ids (the size of the protocol → category table).
    pub const BUILTIN_COUNT: u16 = 6;
    pub const FIRST_POLICY_APP: u16 = 256;

    /// The built-in protocol's name.
    pub const fn builtin_name(app: u16) -> Option<&'static str> {
        match app {
            TLS => Some("tls"),
            HTTP => Some("http"),
            QUIC => Some("quic"),
            BITTORRENT => Some("bittorrent"),
            UNREADABLE => Some("unreadable"),
            _ => None,
        }
    }
}

/// Category 0: no category matched.
pub const UNCATEGORIZED: u16 = 0;

/// Where a flow's classification stands ([`crate::flow::FlowEntry::class_state`]).
pub mod state {
    /// Waiting for the client's first payload (TCP) or looking at the first datagrams.
    pub const INSPECTING: u8 = 0;
    /// A ClientHello or HTTP request spans segments: collecting them (REASM map).
    pub const REASSEMBLING: u8 = 1;
    /// A QUIC Initial went to the daemon; waiting for its answer (CLASS_RESULTS map).
    pub const QUIC_PENDING: u8 = 2;
    /// Nothing more to learn: the fast path only counts.
    pub const DONE: u8 = 3;
    /// TCP, named: the client's next segments are looked at until one starts past the
    /// bytes the name came from, so that a second version of those bytes (a decoy sent
    /// first, the real hello after) is caught.
    pub const WATCH: u8 = 4;
}

/// Bits of [`crate::flow::FlowEntry::evasion`]: what a client did to hide a flow's name.
/// The first five are decoys and contradictions no honest TCP stack produces; the rest are
/// ways of cutting the bytes that real clients use too, noted for the record.
pub mod evasion {
    /// A segment with a wrong TCP or UDP checksum, or a wrong IPv4 header checksum.
    pub const BAD_CHECKSUM: u8 = 1 << 0;
    /// A TTL or hop limit the server would not see it with: 1 (it dies at the gateway), or
    /// other than the SYN's.
    pub const BAD_TTL: u8 = 1 << 1;
    /// A sequence or acknowledgment number outside the window, or data without ACK.
    pub const BAD_SEQUENCE: u8 = 1 << 2;
    /// An option or header the server drops the segment for: an older timestamp than the
    /// SYN's (PAWS), an MD5 or authentication option the SYN had not, a misplaced IPv6
    /// hop-by-hop header, urgent data.
    pub const BAD_OPTIONS: u8 = 1 << 3;
    /// Different bytes at the same stream position: two versions of the stream.
    pub const CONFLICT: u8 = 1 << 4;
    /// Segments arrived out of order.
    pub const REORDERED: u8 = 1 << 5;
    /// The ClientHello was spread over several TLS records.
    pub const RECORDS: u8 = 1 << 6;
    /// The first payload came in IP fragments.
    pub const FRAGMENTED: u8 = 1 << 7;
    /// Decoys and contradictions: a flow with any of these tried to deceive.
    pub const DECEPTION: u8 = BAD_CHECKSUM | BAD_TTL | BAD_SEQUENCE | BAD_OPTIONS | CONFLICT;

    /// Names of the bits, in bit order, as records and reports show them.
    pub const NAMES: [(u8, &str); 8] = [
        (BAD_CHECKSUM, "bad-checksum"),
        (BAD_TTL, "bad-ttl"),
        (BAD_SEQUENCE, "bad-sequence"),
        (BAD_OPTIONS, "bad-options"),
        (CONFLICT, "conflict"),
        (REORDERED, "reordered"),
        (RECORDS, "tls-records"),
        (FRAGMENTED, "ip-fragments"),
    ];
}

/// Bits of [`crate::flow::FlowEntry::class_flags`].
pub mod class_flags {
    /// The ClientHello carried the Encrypted Client Hello extension (0xfe0d). Chrome sends a
    /// GREASE ECH extension even without ECH, so this means "ECH or GREASE ECH".
    pub const ECH: u8 = 1 << 0;
    /// The first payload looked like TLS or HTTP but could not be read within the
    /// datapath's bounds (malformed, too large, too many segments, records or gaps, IP
    /// fragments, a lost reassembly buffer): the flow has the policy's `unreadable` category.
    pub const UNREADABLE: u8 = 1 << 1;
    /// The flow's category came from a port rule before any payload was seen.
    pub const PORT_PROVISIONAL: u8 = 1 << 2;
    /// Internal: a segment came again over bytes the name was read from, and is being read
    /// as a second version (its name goes to `alt_category`).
    pub const RECHECK: u8 = 1 << 3;
    /// Internal: the stream's first bytes are neither TLS nor HTTP; later segments are
    /// looked at one by one (a BitTorrent handshake after an MSE exchange).
    pub const OPAQUE: u8 = 1 << 4;
    /// Internal: the port rules have been consulted for this flow.
    pub const FIRST_LOOK_DONE: u8 = 1 << 7;
    /// The bits that describe the flow (the rest are the datapath's bookkeeping).
    pub const REPORTED: u8 = ECH | UNREADABLE;
}
