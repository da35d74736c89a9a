//! Classification accuracy against nDPI: Debian's `ndpiReader` (libndpi-bin) and our
//! `classifier classify-pcap` over the same captures (tests/captures, plus any given with
//! `--capture`), flow by flow, with the truth from tests/captures/manifest.toml.
//!
//! For each flow (matched by protocol and endpoints, either side first) a row records the
//! truth, nDPI's protocol, name (Hostname/SNI), confidence and what nDPI says of the flow
//! replayed alone (a BPF filter keeps only its packets: that shows when nDPI's answer came
//! from one of its caches of other flows), and ours (name, app, method, category). Rows are
//! summed per protocol family (TLS/SNI, HTTP Host, QUIC, BitTorrent, other): both found the
//! same name, both found the protocol, only one found it, neither.
//!
//! Every disagreement gets an explanation from the rules in [`explain`], which read only the
//! row and evidence taken from the capture itself (tests/src/wire: decrypted QUIC Initials,
//! tracker responses); where no rule applies the explanation is "unexplained".
//!
//! The evasion captures (tests/captures/evasion: real clients' hellos re-sent as zapret,
//! GoodbyeDPI, byedpi and SpoofDPI send them) are compared too, in a table of their own:
//! per technique and address family, the name nDPI found, the name ours found (classify-pcap
//! with the built-in policy at work, as tests/tests/evasion_captures.rs runs it), and whether
//! each is right — the name the server reads, or, where nothing can be read, the flow flagged
//! unreadable (ours; nDPI has no such flag).
//!
//! Needs root (classify-pcap loads the BPF programs) and ndpiReader. `--quick` is accepted
//! for `cargo xtask bench --quick` and changes nothing: the captures are small.
//!
//! Run with `cargo xtask bench [--quick]`; writes target/bench/ndpi.json and ndpi.md.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use classifier_tests::wire::{self, quic};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// Accepted for `cargo xtask bench --quick`; the run is the same (the captures are small).
    #[arg(long)]
    quick: bool,
    /// Another capture to compare too (pcap or pcapng, Ethernet); it has no truth (the
    /// manifest covers tests/captures only). May be repeated.
    #[arg(long = "capture", value_name = "FILE")]
    extra: Vec<PathBuf>,
    /// Compare only the given --capture files, not tests/captures (nor its evasion
    /// captures).
    #[arg(long)]
    only_extra: bool,
    /// The ndpiReader to run.
    #[arg(long, default_value = "ndpiReader")]
    ndpi_reader: PathBuf,
    /// Where to write ndpi.json and ndpi.md.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))]
    out_dir: PathBuf,
}

fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures")
}

// ---------------------------------------------------------------------------------------
// Flow keys

/// A flow: its transport and its two endpoints, the lower first (nDPI lists either side
/// first, we list the LAN client first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    l4: String,
    low: SocketAddr,
    high: SocketAddr,
}

impl Key {
    fn new(l4: &str, a: SocketAddr, b: SocketAddr) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        Self {
            l4: l4.to_ascii_lowercase(),
            low,
            high,
        }
    }
}

// ---------------------------------------------------------------------------------------
// ndpiReader's output

/// One flow of ndpiReader's CSV (`-C FILE`), with the console line's (`-v 2`) confidence and
/// category.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct NdpiFlow {
    l4: String,
    src: SocketAddr,
    dst: SocketAddr,
    /// `91.124` (master.app) or `37`.
    proto_id: String,
    /// `TLS.YouTube`, `BitTorrent`, `Unknown`.
    proto: String,
    /// Hostname/SNI, HTTP Host (without port) or tracker host, if nDPI saw one.
    name: Option<String>,
    first_seen: f64,
    packets_src_to_dst: u64,
    packets_dst_to_src: u64,
    confidence: Option<String>,
    category: Option<String>,
}

/// What ndpiReader's CSV gives, and how many of its rows have more fields than its header
/// (4.2 does not quote, and free-text columns such as flow_info may hold commas).
#[derive(Debug, PartialEq)]
struct NdpiCsv {
    flows: Vec<NdpiFlow>,
    misaligned_rows: usize,
}

/// IANA protocol number (CSV `protocol`) to name.
fn l4_name(number: &str) -> String {
    match number {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "1" => "icmp".into(),
        "58" => "icmpv6".into(),
        other => format!("ip-{other}"),
    }
}

/// Parses ndpiReader's `-C` CSV. Columns are looked up by the header's names; all used here
/// come before any free-text column but `server_name_sni`, so a misaligned tail does not
/// move them.
fn parse_ndpi_csv(text: &str) -> anyhow::Result<NdpiCsv> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .context("ndpiReader CSV: no header")?
        .clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("ndpiReader CSV: no column {name} in {header:?}"))
    };
    let protocol = column("protocol")?;
    let first_seen = column("first_seen")?;
    let src_ip = column("src_ip")?;
    let src_port = column("src_port")?;
    let dst_ip = column("dst_ip")?;
    let dst_port = column("dst_port")?;
    let proto_id = column("ndpi_proto_num")?;
    let proto = column("ndpi_proto")?;
    let sni = column("server_name_sni")?;
    let c_to_s = column("c_to_s_pkts")?;
    let s_to_c = column("s_to_c_pkts")?;
    let mut flows = Vec::new();
    let mut misaligned_rows = 0;
    for record in reader.records() {
        let record = record.context("ndpiReader CSV row")?;
        if record.len() != header.len() {
            misaligned_rows += 1;
        }
        let field = |i: usize| {
            record
                .get(i)
                .with_context(|| format!("ndpiReader CSV: short row {record:?}"))
        };
        let endpoint = |ip: usize, port: usize| -> anyhow::Result<SocketAddr> {
            let ip: IpAddr = field(ip)?
                .parse()
                .with_context(|| format!("ndpiReader CSV: address in {record:?}"))?;
            let port: u16 = field(port)?
                .parse()
                .with_context(|| format!("ndpiReader CSV: port in {record:?}"))?;
            Ok(SocketAddr::new(ip, port))
        };
        let name = field(sni)?;
        flows.push(NdpiFlow {
            l4: l4_name(field(protocol)?),
            src: endpoint(src_ip, src_port)?,
            dst: endpoint(dst_ip, dst_port)?,
            proto_id: field(proto_id)?.to_string(),
            proto: field(proto)?.to_string(),
            name: (!name.is_empty()).then(|| name.to_string()),
            first_seen: field(first_seen)?.parse().unwrap_or(0.0),
            packets_src_to_dst: field(c_to_s)?.parse().unwrap_or(0),
            packets_dst_to_src: field(s_to_c)?.parse().unwrap_or(0),
            confidence: None,
            category: None,
        });
    }
    Ok(NdpiCsv {
        flows,
        misaligned_rows,
    })
}

/// One flow line of ndpiReader's console listing (`-v 2`):
/// `\t1\tTCP 192.0.2.10:51730 <-> 203.0.113.10:6881 [proto: 37/BitTorrent][ClearText]
/// [Confidence: DPI (cache)][cat: Download/7]...[Hostname/SNI: ...]...`
#[derive(Clone, Debug, PartialEq)]
struct NdpiLine {
    l4: String,
    src: SocketAddr,
    dst: SocketAddr,
    bidirectional: bool,
    proto_id: String,
    proto: String,
    confidence: Option<String>,
    category: Option<String>,
    name: Option<String>,
}

/// `[2001:db8::1]:80` or `192.0.2.1:80`.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

/// The value of the first `[key: value]` field of a console line (up to the next `]`).
fn bracket_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("[{key}: "))? + key.len() + 3;
    let end = line[start..].find(']')? + start;
    Some(&line[start..end])
}

fn parse_ndpi_line(line: &str) -> Option<NdpiLine> {
    // "\t<id>\t<L4> <src> <-> <dst> [..."
    let rest = line.strip_prefix('\t')?;
    let (id, rest) = rest.split_once('\t')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut words = rest.splitn(5, ' ');
    let l4 = words.next()?.to_ascii_lowercase();
    let src = parse_endpoint(words.next()?)?;
    let arrow = words.next()?;
    let dst = parse_endpoint(words.next()?)?;
    let fields = words.next()?;
    let bidirectional = match arrow {
        "<->" => true,
        "->" => false,
        _ => return None,
    };
    let (proto_id, proto) = bracket_field(fields, "proto")?.split_once('/')?;
    let category = bracket_field(fields, "cat").map(|c| {
        c.rsplit_once('/')
            .map_or(c, |(name, _number)| name)
            .to_string()
    });
    Some(NdpiLine {
        l4,
        src,
        dst,
        bidirectional,
        proto_id: proto_id.to_string(),
        proto: proto.to_string(),
        confidence: bracket_field(fields, "Confidence").map(str::to_string),
        category,
        name: bracket_field(fields, "Hostname/SNI").map(str::to_string),
    })
}

/// The flow lines of ndpiReader's console output, by flow.
fn parse_ndpi_console(stdout: &str) -> BTreeMap<Key, NdpiLine> {
    stdout
        .lines()
        .filter_map(parse_ndpi_line)
        .map(|line| (Key::new(&line.l4, line.src, line.dst), line))
        .collect()
}

/// `Welcome to nDPI 4.2.0` → `4.2.0`.
fn parse_ndpi_version(help: &str) -> Option<String> {
    let line = help.lines().find(|l| l.contains("nDPI"))?;
    let start = line.find("nDPI ")? + 5;
    let version: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}

struct Ndpi {
    program: PathBuf,
    version: String,
}

impl Ndpi {
    fn find(program: &Path) -> anyhow::Result<Self> {
        let output = match Command::new(program).arg("-h").output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} not found: install libndpi-bin (cargo xtask setup does)",
                program.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("running {}", program.display())),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let version = parse_ndpi_version(&text).with_context(|| {
            format!(
                "{} -h does not say which nDPI it is: is it ndpiReader?",
                program.display()
            )
        })?;
        Ok(Self {
            program: program.to_owned(),
            version,
        })
    }

    /// Runs ndpiReader over `capture` (only the packets `filter` keeps, if given): its flows
    /// from the CSV with the console listing's confidence and category.
    fn run(&self, capture: &Path, filter: Option<&str>, scratch: &Path) -> anyhow::Result<NdpiCsv> {
        let csv_path = scratch.join(format!(
            "{}-{}.csv",
            capture.file_name().unwrap_or_default().to_string_lossy(),
            NEXT_CSV.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = Command::new(&self.program);
        command
            .arg("-i")
            .arg(capture)
            .arg("-C")
            .arg(&csv_path)
            .args(["-v", "2"]);
        if let Some(filter) = filter {
            command.args(["-f", filter]);
        }
        let output = command
            .output()
            .with_context(|| format!("running {}", self.program.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "ndpiReader -i {}: {}\n{}{}",
                capture.display(),
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = std::fs::read_to_string(&csv_path)
            .with_context(|| format!("ndpiReader wrote no CSV for {}", capture.display()))?;
        let _ = std::fs::remove_file(&csv_path);
        let mut csv = parse_ndpi_csv(&text)
            .with_context(|| format!("ndpiReader's CSV for {}", capture.display()))?;
        let console = parse_ndpi_console(&stdout);
        for flow in &mut csv.flows {
            let key = Key::new(&flow.l4, flow.src, flow.dst);
            let line = console.get(&key).with_context(|| {
                format!(
                    "ndpiReader on {}: CSV flow {key:?} missing from its -v 2 listing",
                    capture.display()
                )
            })?;
            if line.proto != flow.proto {
                bail!(
                    "ndpiReader on {}: {key:?} is {} in the CSV but {} in the listing",
                    capture.display(),
                    flow.proto,
                    line.proto
                );
            }
            flow.confidence = line.confidence.clone();
            flow.category = line.category.clone();
        }
        Ok(csv)
    }
}

/// Numbers ndpiReader's CSV files (threads may run it on the same capture).
static NEXT_CSV: AtomicU32 = AtomicU32::new(0);

/// A BPF filter (pcap-filter(7)) keeping only the packets of one flow.
fn flow_filter(key: &Key) -> String {
    let hosts = format!("host {} and host {}", key.low.ip(), key.high.ip());
    match key.l4.as_str() {
        "tcp" | "udp" => format!(
            "{} and {hosts} and port {} and port {}",
            key.l4,
            key.low.port(),
            key.high.port()
        ),
        "icmp" => format!("icmp and {hosts}"),
        "icmpv6" => format!("icmp6 and {hosts}"),
        _ => hosts,
    }
}

// ---------------------------------------------------------------------------------------
// Ours

/// One flow of `classifier classify-pcap --json`.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct OursFlow {
    client: SocketAddr,
    server: SocketAddr,
    proto: String,
    name: Option<String>,
    category: String,
    app: String,
    method: String,
}

/// $CLASSIFIER_BIN, else the workspace's release build, else its debug build.
fn classifier_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CLASSIFIER_BIN") {
        let path = PathBuf::from(path);
        if !path.exists() {
            bail!("CLASSIFIER_BIN={} does not exist", path.display());
        }
        return Ok(path);
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    for profile in ["release", "debug"] {
        let path = target.join(profile).join("classifier");
        if path.exists() {
            return Ok(path);
        }
    }
    bail!(
        "no classifier binary: build it (cargo build --release -p classifier-user) or set \
         CLASSIFIER_BIN"
    )
}

/// Our flows for `capture`, outside working hours (the built-in policy blocks BitTorrent
/// during them, and a blocked flow's later packets would not reach the classifier as they
/// did on the wire).
fn classify(bin: &Path, capture: &Path) -> anyhow::Result<Vec<OursFlow>> {
    let output = Command::new(bin)
        .arg("classify-pcap")
        .arg(capture)
        .args(["--period", "outside", "--json"])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !output.status.success() {
        bail!(
            "{} classify-pcap {}: {}\n{}",
            bin.display(),
            capture.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("classify-pcap line {l}")))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Truth

#[derive(Debug, Deserialize)]
struct Manifest {
    capture: Vec<ManifestCapture>,
}

#[derive(Debug, Deserialize)]
struct ManifestCapture {
    file: String,
    flow: Vec<ManifestFlow>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct ManifestFlow {
    client: SocketAddr,
    server: SocketAddr,
    protocol: String,
    name: String,
    detection: String,
}

// ---------------------------------------------------------------------------------------
// Evidence from the capture itself (tests/src/wire)

/// What the packets show that the rules need.
#[derive(Clone, Debug, Default, Serialize)]
struct Evidence {
    /// Earlier flows of the capture whose tracker response named this flow's server.
    named_by_tracker: Vec<String>,
    /// QUIC: nDPI 4.2's CRYPTO reassembly replayed on the decrypted Initials.
    quic_ndpi_reassembly: Option<QuicReassembly>,
    /// Google QUIC: the version (`Q025`) in the public header of the client's first
    /// datagram (version flag set, 8-byte connection ID).
    gquic_version: Option<String>,
}

/// nDPI 4.2's QUIC ClientHello reassembly (quic.c `__reassemble`,
/// `get_reassembled_crypto_data`) replayed on the client's decrypted Initials: a CRYPTO
/// fragment at offset 0 holding the whole ClientHello is taken at once; otherwise fragments
/// are appended only when their offset is the buffer's current end (no out-of-order,
/// overlap or retransmission), into at most 4096 bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct QuicReassembly {
    initials: usize,
    /// CRYPTO fragment offsets per Initial, in the order sent.
    offsets: Vec<Vec<u64>>,
    /// The ClientHello's length (from its first 4 bytes), when offset 0 was seen.
    hello_len: Option<usize>,
    /// Bytes nDPI's buffer holds at the end.
    assembled: usize,
    /// Fragments nDPI skips (offset not at the buffer's end).
    skipped: usize,
    complete: bool,
}

/// One Initial's CRYPTO frames: (stream offset, bytes), in the order sent.
type CryptoFrames = Vec<(u64, Vec<u8>)>;

fn simulate_ndpi_quic(initials: &[CryptoFrames]) -> QuicReassembly {
    const MAX: usize = 4096;
    let complete = |buf: &[u8]| {
        buf.len() >= 4
            && 4 + ((buf[1] as usize) << 16 | (buf[2] as usize) << 8 | buf[3] as usize) == buf.len()
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut skipped = 0;
    let mut hello_len = None;
    let mut done = false;
    for frames in initials {
        for (offset, data) in frames {
            if *offset == 0 && data.len() >= 4 {
                hello_len = Some(
                    4 + ((data[1] as usize) << 16 | (data[2] as usize) << 8 | data[3] as usize),
                );
            }
            if *offset == 0 && complete(data) {
                buf = data.clone();
                done = true;
                break;
            }
            if *offset as usize != buf.len() || buf.len() + data.len() > MAX {
                skipped += 1;
                continue;
            }
            buf.extend_from_slice(data);
            if complete(&buf) {
                done = true;
                break;
            }
        }
        if done {
            break;
        }
    }
    QuicReassembly {
        initials: initials.len(),
        offsets: initials
            .iter()
            .map(|frames| frames.iter().map(|(o, _)| *o).collect())
            .collect(),
        hello_len,
        assembled: buf.len(),
        skipped,
        complete: done,
    }
}

/// The CRYPTO frames of each client Initial of a UDP flow, in the order sent; None when a
/// datagram's frames could not all be read.
fn client_initials(flow: &wire::Flow) -> Option<Vec<CryptoFrames>> {
    let first_direction = flow.datagrams.first()?.0;
    let mut keys = None;
    let mut initials = Vec::new();
    for (direction, datagram) in &flow.datagrams {
        if *direction != first_direction {
            continue;
        }
        let mut rest: &[u8] = datagram;
        while let Some(header) = quic::long_header(rest) {
            if header.is_initial {
                if keys.is_none() {
                    keys = quic::client_initial_keys(header.version, &header.dcid);
                }
                let (_, plaintext) = quic::decrypt_initial(rest, &header, keys.as_ref()?)?;
                let (frames, ok) = quic::crypto_frames(&plaintext);
                if !ok {
                    return None;
                }
                initials.push(frames);
            }
            rest = rest.get(header.packet_len..)?;
        }
    }
    (!initials.is_empty()).then_some(initials)
}

/// `Q0xx` from a Google QUIC public header (flags with the version bit 0x01 and the
/// 8-byte connection ID bit 0x08, then the connection ID, then the version).
fn gquic_version(datagram: &[u8]) -> Option<String> {
    let flags = *datagram.first()?;
    if flags & 0x80 != 0 || flags & 0x09 != 0x09 {
        return None;
    }
    let version = datagram.get(9..13)?;
    (version[0] == b'Q' && version[1..].iter().all(u8::is_ascii_digit))
        .then(|| String::from_utf8_lossy(version).into_owned())
}

/// Evidence per flow of one capture (what the wire reader can read: Ethernet pcap).
fn gather_evidence(capture: &Path) -> BTreeMap<Key, Evidence> {
    let Ok(packets) = wire::read_pcap(capture) else {
        return BTreeMap::new();
    };
    let flows = wire::flows(&packets);
    let facts = wire::analyze(&packets);
    let mut evidence: BTreeMap<Key, Evidence> = BTreeMap::new();
    for (index, fact) in facts.iter().enumerate() {
        let key = Key::new(fact.protocol.as_str(), fact.client, fact.server);
        let entry = evidence.entry(key).or_default();
        for earlier in &facts[..index] {
            if earlier.tracker_peers.contains(&fact.server)
                || earlier.tracker_peers.contains(&fact.client)
            {
                entry.named_by_tracker.push(format!(
                    "{} {} → {}",
                    earlier.protocol.as_str(),
                    earlier.client,
                    earlier.server
                ));
            }
        }
    }
    for flow in &flows {
        if flow.protocol != wire::Protocol::Udp {
            continue;
        }
        if let Some(version) = flow.datagrams.first().and_then(|(_, d)| gquic_version(d)) {
            let key = Key::new(flow.protocol.as_str(), flow.client, flow.server);
            evidence.entry(key).or_default().gquic_version = Some(version);
        }
        if let Some(initials) = client_initials(flow) {
            let key = Key::new(flow.protocol.as_str(), flow.client, flow.server);
            evidence.entry(key).or_default().quic_ndpi_reassembly =
                Some(simulate_ndpi_quic(&initials));
        }
    }
    evidence
}

// ---------------------------------------------------------------------------------------
// Rows

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Family {
    TlsSni,
    HttpHost,
    Quic,
    BitTorrent,
    Other,
}

impl Family {
    const ALL: [Family; 5] = [
        Family::TlsSni,
        Family::HttpHost,
        Family::Quic,
        Family::BitTorrent,
        Family::Other,
    ];

    fn title(self) -> &'static str {
        match self {
            Family::TlsSni => "TLS/SNI",
            Family::HttpHost => "HTTP Host",
            Family::Quic => "QUIC",
            Family::BitTorrent => "BitTorrent",
            Family::Other => "other",
        }
    }

    fn of_truth(detection: &str) -> Family {
        match detection {
            "sni" => Family::TlsSni,
            "host" => Family::HttpHost,
            "quic" => Family::Quic,
            d if d.starts_with("bt-") || d == "peer-cache" => Family::BitTorrent,
            _ => Family::Other,
        }
    }

    fn of_ours(ours: &OursFlow) -> Option<Family> {
        match ours.method.as_str() {
            "sni" => Some(Family::TlsSni),
            "host" => Some(Family::HttpHost),
            "quic" => Some(Family::Quic),
            _ if ours.app == "bittorrent" => Some(Family::BitTorrent),
            _ => None,
        }
    }

    fn of_ndpi(ndpi: &NdpiFlow) -> Option<Family> {
        [
            Family::BitTorrent,
            Family::Quic,
            Family::TlsSni,
            Family::HttpHost,
        ]
        .into_iter()
        .find(|&family| ndpi_found(ndpi, family))
    }
}

/// The parts of nDPI's `master.app` protocol name.
fn ndpi_parts(proto: &str) -> impl Iterator<Item = &str> {
    proto.split('.')
}

/// Whether nDPI's protocol is of `family`.
fn ndpi_found(ndpi: &NdpiFlow, family: Family) -> bool {
    let mut parts = ndpi_parts(&ndpi.proto);
    match family {
        Family::TlsSni => parts.any(|p| p == "TLS"),
        Family::HttpHost => parts.any(|p| p.starts_with("HTTP")),
        Family::Quic => parts.any(|p| p == "QUIC"),
        Family::BitTorrent => parts.any(|p| p == "BitTorrent"),
        Family::Other => ndpi.proto != "Unknown",
    }
}

/// Whether ours is of `family`.
fn ours_found(ours: &OursFlow, family: Family) -> bool {
    match family {
        Family::Other => ours.app != "unknown",
        family => Family::of_ours(ours) == Some(family),
    }
}

/// Protocol names that say only the transport, not an application.
const GENERIC: [&str; 6] = ["tls", "http", "quic", "unknown", "dns", ""];

fn normalise_app(app: &str) -> String {
    app.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// nDPI's application: the app part of `master.app`, or the protocol when it is one
/// (BitTorrent); None for a transport only (TLS, HTTP, QUIC, Unknown).
fn ndpi_app(proto: &str) -> Option<String> {
    let app = normalise_app(proto.rsplit('.').next().unwrap_or(proto));
    (!GENERIC.contains(&app.as_str())).then_some(app)
}

fn ours_app(app: &str) -> Option<String> {
    let app = normalise_app(app);
    (!GENERIC.contains(&app.as_str())).then_some(app)
}

/// A name as classifiers compare it: case folded, no trailing dot, no `:port` of the server.
fn normalise_name(name: &str, server_port: Option<u16>) -> String {
    let mut name = name.trim().to_ascii_lowercase();
    if let Some(port) = server_port
        && let Some(stripped) = name.strip_suffix(&format!(":{port}"))
    {
        name = stripped.to_string();
    }
    name.trim_end_matches('.').to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Outcome {
    /// Both found the protocol and the same name.
    SameName,
    /// Both found the protocol; the names differ or there is none to compare.
    BothProtocol,
    OnlyNdpi,
    OnlyOurs,
    Neither,
}

#[derive(Debug, Serialize)]
struct Row {
    capture: String,
    l4: String,
    client: SocketAddr,
    server: SocketAddr,
    family: Family,
    truth: Option<ManifestFlow>,
    ndpi: Option<NdpiFlow>,
    /// nDPI on this flow's packets only (`-f` filter): protocol and confidence.
    ndpi_alone: Option<Alone>,
    ours: Option<OursFlow>,
    outcome: Outcome,
    /// Both names, compared case-folded without a trailing dot; None when neither has one.
    names_agree: Option<bool>,
    apps_agree: bool,
    ndpi_app: Option<String>,
    ours_app: Option<String>,
    /// Whether each side's name is the truth's (flows with a name in the manifest).
    ndpi_name_right: Option<bool>,
    ours_name_right: Option<bool>,
    disagreement: Option<String>,
    explanation: Option<String>,
    /// How each side knew, where the row alone does not show it.
    notes: Vec<String>,
    /// Where ours differs from the manifest, and why.
    ours_vs_truth: Option<String>,
    evidence: Evidence,
}

impl Row {
    fn flow(&self) -> String {
        format!(
            "{} {} {} → {}",
            self.capture, self.l4, self.client, self.server
        )
    }
}

struct CaptureResult {
    name: String,
    truth: Vec<ManifestFlow>,
    ndpi: NdpiCsv,
    ndpi_alone: NdpiAlone,
    ours: Vec<OursFlow>,
    evidence: BTreeMap<Key, Evidence>,
}

fn build_rows(result: CaptureResult) -> Vec<Row> {
    let mut keys: Vec<Key> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add = |key: Key, keys: &mut Vec<Key>| {
        if seen.insert(key.clone()) {
            keys.push(key);
        }
    };
    let truth: BTreeMap<Key, &ManifestFlow> = result
        .truth
        .iter()
        .map(|t| (Key::new(&t.protocol, t.client, t.server), t))
        .collect();
    let ours: BTreeMap<Key, &OursFlow> = result
        .ours
        .iter()
        .map(|o| (Key::new(&o.proto, o.client, o.server), o))
        .collect();
    let ndpi: BTreeMap<Key, &NdpiFlow> = result
        .ndpi
        .flows
        .iter()
        .map(|n| (Key::new(&n.l4, n.src, n.dst), n))
        .collect();
    for t in &result.truth {
        add(Key::new(&t.protocol, t.client, t.server), &mut keys);
    }
    for o in &result.ours {
        add(Key::new(&o.proto, o.client, o.server), &mut keys);
    }
    let mut by_time: Vec<&NdpiFlow> = result.ndpi.flows.iter().collect();
    by_time.sort_by(|a, b| a.first_seen.total_cmp(&b.first_seen));
    for n in by_time {
        add(Key::new(&n.l4, n.src, n.dst), &mut keys);
    }

    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|key| {
            let truth = truth.get(&key).map(|t| (*t).clone());
            let ours = ours.get(&key).map(|o| (*o).clone());
            let ndpi = ndpi.get(&key).map(|n| (*n).clone());
            let (client, server) = match (&truth, &ours, &ndpi) {
                (Some(t), _, _) => (t.client, t.server),
                (None, Some(o), _) => (o.client, o.server),
                (None, None, Some(n)) => (n.src, n.dst),
                (None, None, None) => (key.low, key.high),
            };
            let family = truth
                .as_ref()
                .map(|t| Family::of_truth(&t.detection))
                .or_else(|| ours.as_ref().and_then(Family::of_ours))
                .or_else(|| ndpi.as_ref().and_then(Family::of_ndpi))
                .unwrap_or(Family::Other);
            let ndpi_has = ndpi.as_ref().is_some_and(|n| ndpi_found(n, family));
            let ours_has = ours.as_ref().is_some_and(|o| ours_found(o, family));
            let port = Some(server.port());
            let ndpi_name = ndpi
                .as_ref()
                .and_then(|n| n.name.as_deref())
                .map(|n| normalise_name(n, port));
            let ours_name = ours
                .as_ref()
                .and_then(|o| o.name.as_deref())
                .map(|n| normalise_name(n, port));
            let names_agree = match (&ndpi_name, &ours_name) {
                (None, None) => None,
                (a, b) => Some(a == b),
            };
            let outcome = match (ndpi_has, ours_has) {
                (true, true) if names_agree == Some(true) => Outcome::SameName,
                (true, true) => Outcome::BothProtocol,
                (true, false) => Outcome::OnlyNdpi,
                (false, true) => Outcome::OnlyOurs,
                (false, false) => Outcome::Neither,
            };
            let ndpi_app = ndpi.as_ref().and_then(|n| ndpi_app(&n.proto));
            let ours_app = ours.as_ref().and_then(|o| ours_app(&o.app));
            let truth_name = truth
                .as_ref()
                .filter(|t| !t.name.is_empty())
                .map(|t| normalise_name(&t.name, port));
            let ndpi_name_right = truth_name.as_ref().map(|t| ndpi_name.as_ref() == Some(t));
            let ours_name_right = truth_name.as_ref().map(|t| ours_name.as_ref() == Some(t));
            Row {
                capture: result.name.clone(),
                l4: key.l4.clone(),
                client,
                server,
                family,
                ndpi_alone: result.ndpi_alone.get(&key).cloned(),
                evidence: result.evidence.get(&key).cloned().unwrap_or_default(),
                truth,
                ndpi,
                ours,
                outcome,
                names_agree,
                apps_agree: ndpi_app == ours_app,
                ndpi_app,
                ours_app,
                ndpi_name_right,
                ours_name_right,
                disagreement: None,
                explanation: None,
                notes: Vec::new(),
                ours_vs_truth: None,
            }
        })
        .collect();
    let snapshot: Vec<RowView> = rows.iter().map(RowView::of).collect();
    for row in &mut rows {
        explain(row, &snapshot);
    }
    rows
}

/// What rules may read of other rows of the same capture.
struct RowView {
    flow: String,
    client: SocketAddr,
    server: SocketAddr,
    ndpi_bittorrent_alone: bool,
}

impl RowView {
    fn of(row: &Row) -> Self {
        Self {
            flow: format!("{} {} → {}", row.l4, row.client, row.server),
            client: row.client,
            server: row.server,
            ndpi_bittorrent_alone: row
                .ndpi_alone
                .as_ref()
                .is_some_and(|alone| ndpi_parts(&alone.proto).any(|p| p == "BitTorrent")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The rules

/// What the two say differently, if anything.
fn disagreement(row: &Row) -> Option<String> {
    let ndpi = || {
        row.ndpi.as_ref().map_or("no such flow".to_string(), |n| {
            format!("{} name {}", n.proto, n.name.as_deref().unwrap_or("-"))
        })
    };
    let ours = || {
        row.ours.as_ref().map_or("no such flow".to_string(), |o| {
            format!(
                "app {} method {} name {}",
                o.app,
                o.method,
                o.name.as_deref().unwrap_or("-")
            )
        })
    };
    let what = match row.outcome {
        Outcome::OnlyNdpi => "only nDPI found it",
        Outcome::OnlyOurs => "only ours found it",
        Outcome::Neither => "neither found it",
        _ if row.names_agree == Some(false) => "names differ",
        _ if !row.apps_agree => "apps differ",
        _ => return None,
    };
    Some(format!("{what}: nDPI {}; ours {}", ndpi(), ours()))
}

/// Fills a row's disagreement, explanation, notes and ours-vs-truth from the rules below.
/// Each rule reads only the row, evidence from the packets, and other rows of the capture.
fn explain(row: &mut Row, rows: &[RowView]) {
    row.disagreement = disagreement(row);
    if row.disagreement.is_some() {
        row.explanation = Some(explain_disagreement(row).unwrap_or_else(|| "unexplained".into()));
    }
    row.notes = notes(row, rows);
    row.ours_vs_truth = ours_vs_truth(row);
}

fn explain_disagreement(row: &Row) -> Option<String> {
    let ndpi = row.ndpi.as_ref();
    let ours = row.ours.as_ref();

    // QUIC: nDPI knows QUIC but has no name; ours has the truth's name; nDPI's in-order-only
    // reassembly, replayed on the decrypted Initials, does not complete the ClientHello.
    if row.family == Family::Quic
        && ndpi.is_some_and(|n| ndpi_found(n, Family::Quic) && n.name.is_none())
        && row.ours_name_right == Some(true)
        && let Some(sim) = &row.evidence.quic_ndpi_reassembly
        && !sim.complete
    {
        let first = sim.offsets.first().cloned().unwrap_or_default();
        return Some(format!(
            "nDPI 4.2 reassembles a QUIC ClientHello only from CRYPTO fragments in order \
             (quic.c __reassemble: an offset other than the buffer's end is dropped); the \
             client's first Initial sends its fragments at offsets {first:?}, so replaying \
             that rule on the {} decrypted Initials assembles {} of {} bytes and skips {} \
             fragments: no SNI. Ours reassembles the CRYPTO stream by offset",
            sim.initials,
            sim.assembled,
            sim.hello_len
                .map_or_else(|| "?".to_string(), |l| l.to_string()),
            sim.skipped
        ));
    }

    // TLS: the names agree once case-folded without the trailing dot, nDPI shows a
    // trailing dot and no app, ours found an app.
    if row.names_agree == Some(true)
        && let (Some(n), Some(_)) = (ndpi, ours)
        && n.name.as_deref().is_some_and(|name| name.ends_with('.'))
        && row.ndpi_app.is_none()
        && let Some(app) = &row.ours_app
    {
        return Some(format!(
            "nDPI 4.2 matches the host name it shows (`{}`: case folded, trailing dot kept) \
             against its host list, and the root label's dot keeps it from matching: no app. \
             Ours folds case and drops the trailing dot before the lookup: {app}",
            n.name.as_deref().unwrap_or("")
        ));
    }

    // Google QUIC (pre-IETF): nDPI reads its cleartext CHLO; ours reads IETF QUIC only.
    if row.l4 == "udp"
        && row.outcome == Outcome::OnlyNdpi
        && ndpi.is_some_and(|n| ndpi_found(n, Family::Quic))
        && ours.is_some_and(|o| o.method == "none")
        && let Some(version) = &row.evidence.gquic_version
    {
        return Some(format!(
            "Google QUIC {version} (the pre-IETF protocol: its public header names the \
             version, its CHLO is in clear), which nDPI 4.2 still parses; ours reads IETF \
             QUIC Initials only (versions 1 and 2)"
        ));
    }

    // ICMP: ours tracks the flow but classifies TCP and UDP only.
    if row.l4.starts_with("icmp")
        && row.outcome == Outcome::OnlyNdpi
        && ours.is_some_and(|o| o.method == "none" && o.app == "unknown")
    {
        return Some(format!(
            "nDPI names the IP protocol ({}); ours counts the ICMP flow but classifies only \
             TCP and UDP payloads (app unknown, method none). Not in the manifest, which \
             lists TCP and UDP flows",
            ndpi.map_or("", |n| n.proto.as_str())
        ));
    }

    // BitTorrent nDPI cannot see (e.g. message stream encryption) that ours knows from a
    // tracker's response.
    if row.family == Family::BitTorrent
        && row.outcome == Outcome::OnlyOurs
        && ours.is_some_and(|o| o.method == "peer-cache")
        && ndpi.is_some_and(|n| n.proto == "Unknown")
    {
        let by = if row.evidence.named_by_tracker.is_empty() {
            "an earlier flow".to_string()
        } else {
            format!(
                "the tracker response in {}",
                row.evidence.named_by_tracker.join(", ")
            )
        };
        return Some(format!(
            "nothing in the flow names BitTorrent (nDPI: Unknown, and its BitTorrent cache \
             holds neither endpoint nor the host pair{}); ours: from the peer cache, the \
             endpoint being named by {by}",
            if row.server.is_ipv6() {
                ": nDPI 4.2 caches IPv4 only"
            } else {
                ""
            }
        ));
    }
    None
}

fn notes(row: &Row, rows: &[RowView]) -> Vec<String> {
    let mut notes = Vec::new();
    let ndpi = row.ndpi.as_ref();

    // nDPI's answer needs other flows: alone it says something else.
    if let (Some(n), Some(alone)) = (ndpi, &row.ndpi_alone)
        && alone.proto != n.proto
    {
        let mut text = format!(
            "nDPI: {} only with the rest of the capture; this flow alone is {} \
             (confidence {})",
            n.proto,
            alone.proto,
            alone.confidence.as_deref().unwrap_or("-")
        );
        if ndpi_found(n, Family::BitTorrent) {
            // nDPI 4.2 caches, for each flow it finds BitTorrent, both ip:port and the sum
            // of the two IPv4 addresses (the host pair), and gives a flow still Unknown when
            // it gives up on it (after 80 TCP / 24 UDP packets, else at the end of the
            // capture) BitTorrent on a hit: a source flow may start later than this one.
            let sources: Vec<&str> = rows
                .iter()
                .filter(|r| r.ndpi_bittorrent_alone)
                .filter(|r| {
                    let hosts = |a: SocketAddr, b: SocketAddr| BTreeSet::from([a.ip(), b.ip()]);
                    hosts(row.client, row.server) == hosts(r.client, r.server)
                        || [r.client, r.server].contains(&row.client)
                        || [r.client, r.server].contains(&row.server)
                })
                .map(|r| r.flow.as_str())
                .collect();
            if row.server.is_ipv6() || sources.is_empty() {
                text.push_str(
                    "; no IPv4 flow nDPI finds BitTorrent alone shares its hosts or an \
                     endpoint: unexplained",
                );
            } else {
                write!(
                    text,
                    ": nDPI 4.2's BitTorrent cache (ip:port of both ends and the host pair of \
                     every flow it finds BitTorrent, looked up when it gives up on a flow, at \
                     the latest at the end of the capture) holds them from {}, which nDPI \
                     finds BitTorrent alone",
                    sources.join(", ")
                )
                .unwrap();
            }
        }
        notes.push(text);
    }

    // nDPI 4.2 labels every BitTorrent detection "DPI (cache)", even one made alone.
    if let (Some(n), Some(alone)) = (ndpi, &row.ndpi_alone)
        && ndpi_found(n, Family::BitTorrent)
        && alone.proto == n.proto
        && alone.confidence.as_deref() == Some("DPI (cache)")
    {
        notes.push(
            "nDPI: confidence `DPI (cache)` although the flow alone is BitTorrent too: 4.2 \
             gives that label to every BitTorrent detection (bittorrent.c)"
                .into(),
        );
    }

    // Ours from the peer cache: which response named the peer.
    if let Some(o) = &row.ours
        && o.method == "peer-cache"
    {
        if row.evidence.named_by_tracker.is_empty() {
            notes.push(
                "ours: peer cache; no tracker response in the capture names this peer (the \
                 cache also learns the peers of earlier BitTorrent flows; which one is not \
                 checked here)"
                    .into(),
            );
        } else {
            notes.push(format!(
                "ours: peer cache, the peer being named by the tracker response in {}",
                row.evidence.named_by_tracker.join(", ")
            ));
        }
    }

    // nDPI's name differs from the truth only by case.
    if let (Some(t), Some(n)) = (&row.truth, ndpi)
        && let Some(name) = &n.name
        && name != &t.name
        && name == &t.name.to_ascii_lowercase()
    {
        notes.push(format!(
            "nDPI shows the name case-folded (`{name}` for `{}`)",
            t.name
        ));
    }
    notes
}

fn ours_vs_truth(row: &Row) -> Option<String> {
    let t = row.truth.as_ref()?;
    let Some(o) = &row.ours else {
        return Some("ours: no such flow; unexplained".into());
    };
    let mut differences = Vec::new();
    if row.ours_name_right == Some(false) {
        differences.push(format!(
            "name {:?} where the manifest has {:?}",
            o.name, t.name
        ));
    }
    if o.method != t.detection {
        differences.push(format!(
            "method {} where the manifest has {}",
            o.method, t.detection
        ));
    }
    if differences.is_empty() {
        return None;
    }
    let why = if row.ours_name_right != Some(false)
        && o.method == "peer-cache"
        && t.detection.starts_with("bt-")
        && t.detection != "bt-tracker"
        && !row.evidence.named_by_tracker.is_empty()
    {
        format!(
            "our first look, before any payload, consults the peer cache, and the tracker \
             response in {} had named this peer, so the flow was BitTorrent before its {} \
             could be seen (same class; the captures test accepts this)",
            row.evidence.named_by_tracker.join(", "),
            t.detection
        )
    } else {
        "unexplained".into()
    };
    Some(format!("{}: {why}", differences.join("; ")))
}

// ---------------------------------------------------------------------------------------
// Summary and output

#[derive(Debug, Default, Serialize)]
struct Summary {
    family: String,
    flows: usize,
    same_name: usize,
    both_protocol: usize,
    only_ndpi: usize,
    only_ours: usize,
    neither: usize,
    apps_agree: usize,
    disagreements: usize,
    /// Of the flows whose truth has a name: how many each side named right.
    named_flows: usize,
    ndpi_name_right: usize,
    ours_name_right: usize,
}

fn summarise(rows: &[Row]) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    let families = Family::ALL.iter().map(|f| (Some(*f), f.title()));
    for (family, title) in families.chain([(None, "all")]) {
        let mut s = Summary {
            family: title.into(),
            ..Summary::default()
        };
        for row in rows.iter().filter(|r| family.is_none_or(|f| r.family == f)) {
            s.flows += 1;
            match row.outcome {
                Outcome::SameName => s.same_name += 1,
                Outcome::BothProtocol => s.both_protocol += 1,
                Outcome::OnlyNdpi => s.only_ndpi += 1,
                Outcome::OnlyOurs => s.only_ours += 1,
                Outcome::Neither => s.neither += 1,
            }
            s.apps_agree += usize::from(row.apps_agree);
            s.disagreements += usize::from(row.disagreement.is_some());
            if let (Some(n), Some(o)) = (row.ndpi_name_right, row.ours_name_right) {
                s.named_flows += 1;
                s.ndpi_name_right += usize::from(n);
                s.ours_name_right += usize::from(o);
            }
        }
        if s.flows > 0 || family.is_none() {
            out.push(s);
        }
    }
    out
}

#[derive(Serialize)]
struct Report<'a> {
    ndpi_version: &'a str,
    classifier_bin: String,
    captures: Vec<String>,
    /// ndpiReader CSV rows with more fields than its header.
    ndpi_csv_misaligned_rows: usize,
    /// Wall time of the whole run, and of each side (they run at the same time).
    seconds: f64,
    ndpi_seconds: f64,
    ours_seconds: f64,
    summary: &'a [Summary],
    rows: &'a [Row],
    /// The evasion captures side by side (none with --only-extra).
    evasion: Option<&'a Evasion>,
}

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let w = &mut md;
    writeln!(w, "## Classification accuracy against nDPI\n").unwrap();
    writeln!(
        w,
        "nDPI {} (Debian `ndpiReader`, defaults) and `classifier classify-pcap` (built-in \
         policy, period `outside`) over {} captures, {} flows, matched by protocol and \
         endpoints. Truth (the manifest's name and method, where a capture has one): \
         tests/captures/manifest.toml; {} flows have it. Captures: {}. `cargo xtask bench` \
         writes this (target/bench/ndpi.md, rows in ndpi.json).\n",
        report.ndpi_version,
        report.captures.len(),
        report.rows.len(),
        report.rows.iter().filter(|r| r.truth.is_some()).count(),
        report.captures.join(", ")
    )
    .unwrap();
    writeln!(
        w,
        "| family | flows | same name | same protocol, names differ or none | only nDPI | \
         only ours | neither | same app | disagreements | name right (nDPI / ours) |"
    )
    .unwrap();
    writeln!(
        w,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    .unwrap();
    for s in report.summary {
        let named = if s.named_flows == 0 {
            "-".to_string()
        } else {
            format!(
                "{} / {} of {}",
                s.ndpi_name_right, s.ours_name_right, s.named_flows
            )
        };
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {named} |",
            s.family,
            s.flows,
            s.same_name,
            s.both_protocol,
            s.only_ndpi,
            s.only_ours,
            s.neither,
            s.apps_agree,
            s.disagreements
        )
        .unwrap();
    }
    writeln!(w, "\n### Disagreements\n").unwrap();
    let mut any = false;
    for row in report.rows {
        if let (Some(what), Some(why)) = (&row.disagreement, &row.explanation) {
            any = true;
            writeln!(
                w,
                "- {} ({}): {what}. **Why:** {why}.",
                row.flow(),
                row.family.title()
            )
            .unwrap();
        }
    }
    if !any {
        writeln!(w, "None.").unwrap();
    }
    writeln!(w, "\n### How each side knew (agreements included)\n").unwrap();
    for row in report.rows {
        for note in &row.notes {
            writeln!(w, "- {}: {note}.", row.flow()).unwrap();
        }
    }
    writeln!(w, "\n### Ours against the manifest\n").unwrap();
    let mut any = false;
    for row in report.rows {
        if let Some(text) = &row.ours_vs_truth {
            any = true;
            writeln!(w, "- {}: {text}.", row.flow()).unwrap();
        }
    }
    if !any && report.rows.iter().any(|r| r.truth.is_some()) {
        writeln!(w, "Every flow has the manifest's name and method.").unwrap();
    } else if !any {
        writeln!(w, "No flow of these captures is in the manifest.").unwrap();
    }
    if report.ndpi_csv_misaligned_rows > 0 {
        writeln!(
            w,
            "\nnDPI's CSV: {} row(s) have more fields than its header (4.2 does not quote \
             free-text columns); the columns read here come before them.",
            report.ndpi_csv_misaligned_rows
        )
        .unwrap();
    }
    if let Some(evasion) = report.evasion {
        evasion_markdown(w, evasion, report.ndpi_version);
    }
    md
}

// ---------------------------------------------------------------------------------------
// Evasion captures, side by side

fn evasion_dir() -> PathBuf {
    captures_dir().join("evasion")
}

/// tests/captures/evasion/manifest.toml, the parts used here.
#[derive(Debug, Deserialize)]
struct EvasionManifest {
    capture: Vec<EvasionCapture>,
}

#[derive(Debug, Deserialize)]
struct EvasionCapture {
    file: String,
    technique: String,
    mimics: String,
    flow: Vec<EvasionTruth>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct EvasionTruth {
    client: SocketAddr,
    server: SocketAddr,
    family: String,
    client_software: String,
    /// What the server reads.
    real_name: String,
    /// What our record must say ("" for none), with its category and verdict at work.
    name: String,
    category: String,
    verdict: String,
    #[serde(default)]
    second_name: String,
    unreadable: bool,
    evasion: Vec<String>,
}

/// One flow of `classify-pcap --json` at work.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct OursAtWork {
    client: SocketAddr,
    server: SocketAddr,
    name: Option<String>,
    category: String,
    verdict: String,
    unreadable: bool,
    #[serde(default)]
    evasion: Vec<String>,
    second_name: Option<String>,
}

/// One evasion flow: the right answer, nDPI's and ours.
#[derive(Debug, Serialize)]
struct EvasionRow {
    capture: String,
    technique: String,
    mimics: String,
    family: String,
    client_software: String,
    client: SocketAddr,
    server: SocketAddr,
    truth: EvasionTruth,
    ndpi: Option<NdpiFlow>,
    ours: Option<OursAtWork>,
    /// nDPI named what the server reads.
    ndpi_right: bool,
    /// Ours named what the server reads (a conflict's second name counts: the flow answers
    /// to both), or flagged the flow unreadable where nothing can be read.
    ours_right: bool,
}

#[derive(Debug, Default, Serialize)]
struct EvasionSummary {
    family: String,
    flows: usize,
    ndpi_right: usize,
    ours_right: usize,
}

#[derive(Debug, Serialize)]
struct Evasion {
    captures: Vec<String>,
    /// `--at` of our runs: working hours under the council policy.
    at: String,
    summary: Vec<EvasionSummary>,
    rows: Vec<EvasionRow>,
}

/// Ours on an evasion capture, with the built-in policy at work.
fn classify_at_work(bin: &Path, capture: &Path) -> anyhow::Result<Vec<OursAtWork>> {
    let output = Command::new(bin)
        .arg("classify-pcap")
        .arg(capture)
        .args(["--json", "--at", classifier_tests::harness::MONDAY_AT_WORK])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !output.status.success() {
        bail!(
            "{} classify-pcap {}: {}\n{}",
            bin.display(),
            capture.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("classify-pcap line {l}")))
        .collect()
}

/// Whether `found` is `real` (case folded, no trailing dot or port).
fn is_real_name(found: Option<&str>, real: &str, port: u16) -> bool {
    found.is_some_and(|name| normalise_name(name, Some(port)) == normalise_name(real, Some(port)))
}

fn evasion_row(
    capture: &EvasionCapture,
    truth: &EvasionTruth,
    ndpi: &NdpiCsv,
    ours: &[OursAtWork],
) -> EvasionRow {
    let key = Key::new("tcp", truth.client, truth.server);
    let ndpi = ndpi
        .flows
        .iter()
        .find(|n| Key::new(&n.l4, n.src, n.dst) == key)
        .cloned();
    let ours = ours
        .iter()
        .find(|o| Key::new("tcp", o.client, o.server) == key) // the evasion captures are TCP
        .cloned();
    let port = truth.server.port();
    let ndpi_right = is_real_name(
        ndpi.as_ref().and_then(|n| n.name.as_deref()),
        &truth.real_name,
        port,
    );
    let ours_right = ours.as_ref().is_some_and(|o| {
        is_real_name(o.name.as_deref(), &truth.real_name, port)
            || is_real_name(o.second_name.as_deref(), &truth.real_name, port)
            || (truth.unreadable && o.unreadable)
    });
    EvasionRow {
        capture: capture.file.clone(),
        technique: capture.technique.clone(),
        mimics: capture.mimics.clone(),
        family: truth.family.clone(),
        client_software: truth.client_software.clone(),
        client: truth.client,
        server: truth.server,
        truth: truth.clone(),
        ndpi,
        ours,
        ndpi_right,
        ours_right,
    }
}

fn summarise_evasion(rows: &[EvasionRow]) -> Vec<EvasionSummary> {
    let mut out = Vec::new();
    for family in ["IPv4", "IPv6", "all"] {
        let mut s = EvasionSummary {
            family: family.into(),
            ..EvasionSummary::default()
        };
        for row in rows
            .iter()
            .filter(|r| family == "all" || r.family == family)
        {
            s.flows += 1;
            s.ndpi_right += usize::from(row.ndpi_right);
            s.ours_right += usize::from(row.ours_right);
        }
        out.push(s);
    }
    out
}

/// ndpiReader and classify-pcap (at work) over every evasion capture.
fn compare_evasion(ndpi: &Ndpi, bin: &Path, scratch: &Path) -> anyhow::Result<Evasion> {
    let text = std::fs::read_to_string(evasion_dir().join("manifest.toml"))
        .context("reading tests/captures/evasion/manifest.toml")?;
    let manifest: EvasionManifest =
        toml::from_str(&text).context("parsing tests/captures/evasion/manifest.toml")?;
    let paths: Vec<PathBuf> = manifest
        .capture
        .iter()
        .map(|c| evasion_dir().join(&c.file))
        .collect();
    let (ndpi_results, ours_results) = std::thread::scope(|scope| {
        let ndpi_side =
            scope.spawn(|| parallel_map(&paths, 2, |path| ndpi.run(path, None, scratch)));
        let ours_side = parallel_map(&paths, 2, |path| classify_at_work(bin, path));
        (ndpi_side.join().expect("ndpiReader thread"), ours_side)
    });
    let mut rows = Vec::new();
    for ((capture, ndpi), ours) in manifest.capture.iter().zip(ndpi_results).zip(ours_results) {
        let ndpi = ndpi?;
        let ours = ours?;
        for truth in &capture.flow {
            rows.push(evasion_row(capture, truth, &ndpi, &ours));
        }
    }
    Ok(Evasion {
        captures: manifest.capture.iter().map(|c| c.file.clone()).collect(),
        at: classifier_tests::harness::MONDAY_AT_WORK.into(),
        summary: summarise_evasion(&rows),
        rows,
    })
}

/// A name as a table cell (in code), or what stands for none.
fn name_cell(name: Option<&str>, none: &str) -> String {
    name.map_or_else(|| none.to_string(), |n| format!("`{n}`"))
}

fn evasion_markdown(w: &mut String, evasion: &Evasion, ndpi_version: &str) {
    let all = evasion.summary.iter().find(|s| s.family == "all");
    writeln!(w, "\n### Evasion cases side by side\n").unwrap();
    writeln!(
        w,
        "Real clients' hellos (and an HTTP request) re-sent the ways zapret, GoodbyeDPI, \
         byedpi and SpoofDPI send them: tests/captures/evasion ({} captures, {} flows; its \
         README says how each is made from the real captures). nDPI {ndpi_version} \
         (`ndpiReader`, defaults) and ours (`classify-pcap`, built-in policy at work: `--at \
         {}`). **Right** means the name the server reads; where nothing can be read (the \
         hello in IP fragments, urgent data) a flow flagged unreadable is right too, and the \
         policy blocks it — nDPI has no such flag, so only the real name counts for it. A \
         conflict (a decoy nothing at the gateway can tell from the real segment) is right \
         when the real name is one of the flow's names. Right: nDPI {} of {}, ours {} of {}.\n",
        evasion.captures.len(),
        evasion.rows.len(),
        evasion.at,
        all.map_or(0, |s| s.ndpi_right),
        all.map_or(0, |s| s.flows),
        all.map_or(0, |s| s.ours_right),
        all.map_or(0, |s| s.flows),
    )
    .unwrap();
    writeln!(w, "| family | flows | nDPI right | ours right |").unwrap();
    writeln!(w, "| --- | ---: | ---: | ---: |").unwrap();
    for s in &evasion.summary {
        writeln!(
            w,
            "| {} | {} | {} | {} |",
            s.family, s.flows, s.ndpi_right, s.ours_right
        )
        .unwrap();
    }
    writeln!(
        w,
        "\n| technique | family | client | right answer | nDPI | nDPI right | ours \
         (category, verdict at work) | ours right |"
    )
    .unwrap();
    writeln!(w, "| --- | --- | --- | --- | --- | :---: | --- | :---: |").unwrap();
    let mark = |right: bool| if right { "yes" } else { "**no**" };
    for row in &evasion.rows {
        let truth = &row.truth;
        let right_answer = if truth.unreadable {
            format!("`{}` or unreadable", truth.real_name)
        } else {
            format!("`{}`", truth.real_name)
        };
        let ndpi = row.ndpi.as_ref().map_or_else(
            || "no such flow".to_string(),
            |n| format!("{} {}", n.proto, name_cell(n.name.as_deref(), "(no name)")),
        );
        let ours = row.ours.as_ref().map_or_else(
            || "no such flow".to_string(),
            |o| {
                let mut names = if o.unreadable && o.name.is_none() {
                    "unreadable".to_string()
                } else {
                    name_cell(o.name.as_deref(), "(no name)")
                };
                if let Some(second) = &o.second_name {
                    write!(names, " and `{second}`").unwrap();
                }
                let notes = if o.evasion.is_empty() {
                    String::new()
                } else {
                    format!("; {}", o.evasion.join(", "))
                };
                format!("{names} ({}, {}{notes})", o.category, o.verdict)
            },
        );
        writeln!(
            w,
            "| {} | {} | {} | {right_answer} | {ndpi} | {} | {ours} | {} |",
            row.technique,
            row.family,
            row.client_software
                .split_whitespace()
                .find(|word| !word.eq_ignore_ascii_case("mozilla"))
                .unwrap_or(&row.client_software),
            mark(row.ndpi_right),
            mark(row.ours_right)
        )
        .unwrap();
    }
    writeln!(w, "\nWhat each technique mimics:\n").unwrap();
    let mut seen = BTreeSet::new();
    for row in &evasion.rows {
        if seen.insert(row.technique.as_str()) {
            writeln!(
                w,
                "- `{}` ({}): {}.",
                row.technique, row.capture, row.mimics
            )
            .unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let _ = args.quick; // the same run either way
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "ndpi-compare needs root: classify-pcap loads the BPF programs \
             (BPF_PROG_TEST_RUN); run it as root (sudo -E cargo xtask bench)"
        );
    }
    let ndpi = Ndpi::find(&args.ndpi_reader)?;
    let bin = classifier_bin()?;
    eprintln!(
        "ndpi-compare: nDPI {} ({}), ours {}",
        ndpi.version,
        ndpi.program.display(),
        bin.display()
    );

    let mut captures: Vec<(PathBuf, Vec<ManifestFlow>)> = Vec::new();
    if !args.only_extra {
        let text = std::fs::read_to_string(captures_dir().join("manifest.toml"))
            .context("reading tests/captures/manifest.toml")?;
        let manifest: Manifest = toml::from_str(&text).context("parsing manifest.toml")?;
        for capture in manifest.capture {
            captures.push((captures_dir().join(&capture.file), capture.flow));
        }
    }
    for extra in &args.extra {
        if !extra.exists() {
            bail!("--capture {}: no such file", extra.display());
        }
        captures.push((extra.clone(), Vec::new()));
    }
    if captures.is_empty() {
        bail!("no captures to compare");
    }

    let scratch = std::env::temp_dir().join(format!("ndpi-compare-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // classify-pcap loads the datapath (a second or two each, mostly in the kernel) and
    // ndpiReader runs once per capture and once per flow: two of each at a time.
    let paths: Vec<PathBuf> = captures.iter().map(|(path, _)| path.clone()).collect();
    let ((ndpi_results, ndpi_seconds), (ours_results, ours_seconds)) =
        std::thread::scope(|scope| {
            let ndpi_side = scope.spawn(|| {
                let started = Instant::now();
                let results = parallel_map(&paths, 2, |path| run_ndpi_side(&ndpi, path, &scratch));
                (results, started.elapsed().as_secs_f64())
            });
            let started = Instant::now();
            let ours_side = parallel_map(&paths, 2, |path| classify(&bin, path));
            let ours = (ours_side, started.elapsed().as_secs_f64());
            (ndpi_side.join().expect("ndpiReader thread"), ours)
        });
    let evasion = if args.only_extra {
        None
    } else {
        Some(compare_evasion(&ndpi, &bin, &scratch)?)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let mut rows = Vec::new();
    let mut names = Vec::new();
    let mut misaligned = 0;
    for (((path, truth), ndpi_result), ours) in
        captures.into_iter().zip(ndpi_results).zip(ours_results)
    {
        let (csv, alone) = ndpi_result?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        names.push(name.clone());
        misaligned += csv.misaligned_rows;
        rows.extend(build_rows(CaptureResult {
            name,
            truth,
            ndpi: csv,
            ndpi_alone: alone,
            ours: ours?,
            evidence: gather_evidence(&path),
        }));
    }
    let summary = summarise(&rows);
    let report = Report {
        ndpi_version: &ndpi.version,
        classifier_bin: bin.display().to_string(),
        captures: names,
        ndpi_csv_misaligned_rows: misaligned,
        seconds: started.elapsed().as_secs_f64(),
        ndpi_seconds,
        ours_seconds,
        summary: &summary,
        rows: &rows,
        evasion: evasion.as_ref(),
    };
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let json_path = args.out_dir.join("ndpi.json");
    let md_path = args.out_dir.join("ndpi.md");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    let md = markdown(&report);
    std::fs::write(&md_path, &md)?;
    print!("{md}");
    eprintln!(
        "ndpi-compare: {} flows and {} evasion flows in {:.1}s (real captures: ndpiReader \
         {:.1}s, classify-pcap {:.1}s, side by side); wrote {} and {}",
        rows.len(),
        report.evasion.map_or(0, |e| e.rows.len()),
        report.seconds,
        report.ndpi_seconds,
        report.ours_seconds,
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

/// `f` over `items` on `threads` threads, results in the items' order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().unwrap();
                        let index = *next;
                        *next += 1;
                        index
                    };
                    let Some(item) = items.get(index) else {
                        break;
                    };
                    let result = f(item);
                    results.lock().unwrap().push((index, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// What nDPI says of one flow replayed alone (a BPF filter keeping only its packets).
#[derive(Clone, Debug, Serialize)]
struct Alone {
    proto: String,
    confidence: Option<String>,
}

type NdpiAlone = BTreeMap<Key, Alone>;

/// nDPI over the whole capture, then over each of its flows alone.
fn run_ndpi_side(ndpi: &Ndpi, path: &Path, scratch: &Path) -> anyhow::Result<(NdpiCsv, NdpiAlone)> {
    let csv = ndpi.run(path, None, scratch)?;
    let mut alone = BTreeMap::new();
    for flow in &csv.flows {
        let key = Key::new(&flow.l4, flow.src, flow.dst);
        let single = ndpi.run(path, Some(&flow_filter(&key)), scratch)?;
        if let Some(same) = single
            .flows
            .iter()
            .find(|f| Key::new(&f.l4, f.src, f.dst) == key)
        {
            alone.insert(
                key,
                Alone {
                    proto: same.proto.clone(),
                    confidence: same.confidence.clone(),
                },
            );
        }
    }
    Ok((csv, alone))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real ndpiReader 4.2 (Debian 12 libndpi-bin 4.2-2) output, verbatim: the CSV
    // (`ndpiReader -i FILE -C FILE.csv`) of tests/captures/bt-udp-tracker.pcap and the row
    // of curl-tls12.pcap; console lines (`-v 2`): statistics and flow lines of
    // bt-udp-tracker.pcap, the flow lines of curl-tls12.pcap, chromium-quic-initial.pcap,
    // the ICMP flow of bt-utp.pcap, and bt-aria2-encrypted.pcap's peer flow alone (`-f`).
    const CSV_BT_UDP_TRACKER: &str = "\
#flow_id,protocol,first_seen,last_seen,duration,src_ip,src_port,dst_ip,dst_port,ndpi_proto_num,ndpi_proto,server_name_sni,c_to_s_pkts,c_to_s_bytes,c_to_s_goodput_bytes,s_to_c_pkts,s_to_c_bytes,s_to_c_goodput_bytes,data_ratio,str_data_ratio,c_to_s_goodput_ratio,s_to_c_goodput_ratio,iat_flow_min,iat_flow_avg,iat_flow_max,iat_flow_stddev,iat_c_to_s_min,iat_c_to_s_avg,iat_c_to_s_max,iat_c_to_s_stddev,iat_s_to_c_min,iat_s_to_c_avg,iat_s_to_c_max,iat_s_to_c_stddev,pktlen_c_to_s_min,pktlen_c_to_s_avg,pktlen_c_to_s_max,pktlen_c_to_s_stddev,pktlen_s_to_c_min,pktlen_s_to_c_avg,pktlen_s_to_c_max,pktlen_s_to_c_stddev,cwr,ece,urg,ack,psh,rst,syn,fin,c_to_s_cwr,c_to_s_ece,c_to_s_urg,c_to_s_ack,c_to_s_psh,c_to_s_rst,c_to_s_syn,c_to_s_fin,s_to_c_cwr,s_to_c_ece,s_to_c_urg,s_to_c_ack,s_to_c_psh,s_to_c_rst,s_to_c_syn,s_to_c_fin,c_to_s_init_win,s_to_c_init_win,server_info,tls_version,ja3c,tls_client_unsafe,ja3s,tls_server_unsafe,tls_alpn,tls_supported_versions,ssh_client_hassh,ssh_server_hassh,flow_info,plen_bins
1,6,1795396366.676,1795396367.671,0.995,192.0.2.10,36708,203.0.113.10,6881,37,BitTorrent,,20,2617,1289,35,35512,33194,-0.863,Download,49.2,93.5,43,496.0,949,453.0,0,70.9,949,243.8,0,35.4,949,176.0,66,130.9,634,157.6,66,1014.6,1514,657.3,0,0,0,54,15,0,2,2,0,0,0,19,7,0,1,1,0,0,0,54,15,0,2,2,74,74,,0,,0,,0,,,,,,5;5;5;5;2;0;0;0;0;0;0;0;0;0;5;2;0;2;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;62;0;0
2,17,1795396367.627,1795396367.628,0.001,203.0.113.10,6881,192.0.2.10,6881,37,BitTorrent,,2,209,125,2,209,125,0.000,Mixed,59.5,59.5,0,0.0,0,0.0,0,0.0,0,0.0,0,0.0,0,0.0,100,104.5,109,4.5,100,104.5,109,4.5,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,,0,,0,,0,,,,,,0;50;50;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0
0,17,1795396365.675,1795396367.672,1.997,192.0.2.10,6881,203.0.113.10,6969,37,BitTorrent,,3,342,216,3,188,62,0.291,Upload,63.0,32.8,1996,1996.0,1996,0.0,1996,998.0,1996,998.0,1996,998.0,1996,998.0,58,114.0,142,39.6,58,62.7,68,4.1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,,0,,0,,0,,,,,,66;0;0;33;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0
";

    const CSV_CURL_TLS12_ROW: &str = "\
0,6,1795396298.255,1795396298.260,0.005,2001:db8:1::10,50996,2001:db8:3::10,443,91.133,TLS.NetFlix,www.netflix.com,10,1326,458,11,6957,6003,-0.680,Download,34.5,86.3,1,1.0,1,0.0,0,0.2,1,0.4,0,0.3,1,0.5,86,132.6,312,71.2,86,632.5,1514,616.3,0,0,0,20,8,0,2,2,0,0,0,9,4,0,1,1,0,0,0,20,8,0,2,2,94,94,,TLSv1.2,87b9bfc7da97115ed2276737b09f8d74,OK,a548c224ffe85e7076d7897c27f6758c,OK,h2;http/1.1,,,,h2;http/1.1,,18;9;9;9;0;0;0;9;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;9;0;9;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;27;0;0;0
";

    const CONSOLE: &str = "\
Using nDPI (4.2.0) [1 thread(s)]
\tConfidence: DPI (cache) 3             (flows)
Detected protocols:
\tBitTorrent           packets: 65            bytes: 39077         flows: 3            
\t1\tTCP 192.0.2.10:36708 <-> 203.0.113.10:6881 [proto: 37/BitTorrent][ClearText][Confidence: DPI (cache)][cat: Download/7][20 pkts/2617 bytes <-> 35 pkts/35512 bytes][Goodput ratio: 49/93][1.00 sec][bytes ratio: -0.863 (Download)][IAT c2s/s2c min/avg/max/stddev: 0/0 71/35 949/949 244/176][Pkt Len c2s/s2c min/avg/max/stddev: 66/66 131/1015 634/1514 158/657][PLAIN TEXT (BitTorrent protocol)][Plen Bins: 5,5,5,5,2,0,0,0,0,0,0,0,0,0,5,2,0,2,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,66,0,0]
\t2\tUDP 192.0.2.10:6881 <-> 203.0.113.10:6969 [proto: 37/BitTorrent][ClearText][Confidence: DPI (cache)][cat: Download/7][3 pkts/342 bytes <-> 3 pkts/188 bytes][Goodput ratio: 63/33][2.00 sec][bytes ratio: 0.291 (Upload)][IAT c2s/s2c min/avg/max/stddev: 1996/1996 998/998 1996/1996 998/998][Pkt Len c2s/s2c min/avg/max/stddev: 58/58 114/63 142/68 40/4][Risk: ** Known Protocol on Non Standard Port **][Risk Score: 50][Plen Bins: 66,0,0,33,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]
\t3\tUDP 203.0.113.10:6881 <-> 192.0.2.10:6881 [proto: 37/BitTorrent][ClearText][Confidence: DPI (cache)][cat: Download/7][2 pkts/209 bytes <-> 2 pkts/209 bytes][Goodput ratio: 60/60][0.00 sec][Risk: ** Known Protocol on Non Standard Port **][Risk Score: 50][Plen Bins: 0,50,50,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]
\t1\tTCP [2001:db8:1::10]:50996 <-> [2001:db8:3::10]:443 [proto: 91.133/TLS.NetFlix][Encrypted][Confidence: DPI][cat: Video/26][10 pkts/1326 bytes <-> 11 pkts/6957 bytes][Goodput ratio: 35/86][0.00 sec][Hostname/SNI: www.netflix.com][ALPN: h2;http/1.1][bytes ratio: -0.680 (Download)][IAT c2s/s2c min/avg/max/stddev: 0/0 0/0 1/1 0/0][Pkt Len c2s/s2c min/avg/max/stddev: 86/86 133/632 312/1514 71/616][Risk: ** TLS Certificate About To Expire **][Risk Score: 50][TLSv1.2][JA3C: 87b9bfc7da97115ed2276737b09f8d74][ServerNames: www.youtube.com,www.netflix.com,open.spotify.com,www.twitch.tv,xn--bcher-kva.example,www.bbc.co.uk,203.0.113.10][JA3S: a548c224ffe85e7076d7897c27f6758c][Issuer: CN=classifier lab CA][Subject: CN=classifier lab server][Certificate SHA-1: 3E:A7:7F:E6:28:77:98:68:20:AA:2D:7B:5B:6F:C0:F6:0E:78:E8:32][Firefox][Validity: 2026-11-23 01:11:33 - 2026-11-25 01:11:33][Cipher: TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384][Plen Bins: 18,9,9,9,0,0,0,9,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,9,0,9,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,27,0,0,0]
\t1\tUDP 192.0.2.10:51791 -> 203.0.113.10:443 [proto: 188/QUIC][Encrypted][Confidence: DPI][cat: Web/5][6 pkts/7752 bytes -> 0 pkts/0 bytes][Goodput ratio: 97/0][4.00 sec][bytes ratio: 1.000 (Upload)][IAT c2s/s2c min/avg/max/stddev: 2/0 800/0 1898/0 678/0][Pkt Len c2s/s2c min/avg/max/stddev: 1292/0 1292/0 1292/0 0/0][Plen Bins: 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,100,0,0,0,0,0,0,0,0]
\t5\tICMP 192.0.2.10:0 -> 203.0.113.10:0 [proto: 81/ICMP][ClearText][Confidence: DPI][cat: Network/14][1 pkts/590 bytes -> 0 pkts/0 bytes][Goodput ratio: 93/0][< 1 sec][Risk: ** Suspicious Entropy **][Risk Score: 50][Plen Bins: 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,100,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]
\t1\tTCP 192.0.2.10:51730 <-> 203.0.113.10:6881 [proto: 0/Unknown][ClearText][Confidence: Unknown][17 pkts/1698 bytes <-> 33 pkts/35738 bytes][Goodput ratio: 33/94][0.90 sec][bytes ratio: -0.909 (Download)][IAT c2s/s2c min/avg/max/stddev: 0/0 74/33 894/894 247/169][Pkt Len c2s/s2c min/avg/max/stddev: 66/66 100/1083 295/1514 61/620][PLAIN TEXT (tg hrw)][Plen Bins: 5,2,5,11,0,0,0,2,0,0,0,0,0,0,8,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,62,0,0]
";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn reads_ndpi_csv_flows_in_either_direction() {
        let csv = parse_ndpi_csv(CSV_BT_UDP_TRACKER).unwrap();
        assert_eq!(csv.misaligned_rows, 0);
        assert_eq!(csv.flows.len(), 3);
        let peer = &csv.flows[0];
        assert_eq!(peer.l4, "tcp");
        assert_eq!(peer.src, addr("192.0.2.10:36708"));
        assert_eq!(peer.dst, addr("203.0.113.10:6881"));
        assert_eq!(peer.proto_id, "37");
        assert_eq!(peer.proto, "BitTorrent");
        assert_eq!(peer.name, None);
        assert_eq!((peer.packets_src_to_dst, peer.packets_dst_to_src), (20, 35));
        // nDPI lists the DHT flow server side first; the key does not care.
        let dht = &csv.flows[1];
        assert_eq!(dht.l4, "udp");
        assert_eq!(dht.src, addr("203.0.113.10:6881"));
        assert_eq!(
            Key::new(&dht.l4, dht.src, dht.dst),
            Key::new("udp", addr("192.0.2.10:6881"), addr("203.0.113.10:6881"))
        );
        assert!(csv.flows[2].first_seen < csv.flows[0].first_seen);
    }

    #[test]
    fn reads_a_misaligned_ndpi_csv_row_by_its_leading_columns() {
        let header = CSV_BT_UDP_TRACKER.lines().next().unwrap();
        let csv = parse_ndpi_csv(&format!("{header}\n{CSV_CURL_TLS12_ROW}")).unwrap();
        assert_eq!(csv.misaligned_rows, 1, "4.2 wrote 81 fields under 80 names");
        let flow = &csv.flows[0];
        assert_eq!(flow.src, addr("[2001:db8:1::10]:50996"));
        assert_eq!(flow.dst, addr("[2001:db8:3::10]:443"));
        assert_eq!(flow.proto_id, "91.133");
        assert_eq!(flow.proto, "TLS.NetFlix");
        assert_eq!(flow.name.as_deref(), Some("www.netflix.com"));
        assert_eq!(ndpi_app(&flow.proto).as_deref(), Some("netflix"));
        assert!(ndpi_found(flow, Family::TlsSni));
    }

    #[test]
    fn rejects_a_csv_without_the_columns_it_needs() {
        assert!(parse_ndpi_csv("#flow_id,protocol\n0,6\n").is_err());
    }

    #[test]
    fn reads_ndpi_console_flow_lines() {
        let lines = parse_ndpi_console(CONSOLE);
        assert_eq!(
            lines.len(),
            7,
            "only flow lines, not statistics: {lines:#?}"
        );
        let tls = &lines[&Key::new(
            "tcp",
            addr("[2001:db8:3::10]:443"),
            addr("[2001:db8:1::10]:50996"),
        )];
        assert_eq!(tls.proto_id, "91.133");
        assert_eq!(tls.proto, "TLS.NetFlix");
        assert_eq!(tls.confidence.as_deref(), Some("DPI"));
        assert_eq!(tls.category.as_deref(), Some("Video"));
        assert_eq!(tls.name.as_deref(), Some("www.netflix.com"));
        assert!(tls.bidirectional);

        let bt = &lines[&Key::new("tcp", addr("192.0.2.10:36708"), addr("203.0.113.10:6881"))];
        assert_eq!(bt.confidence.as_deref(), Some("DPI (cache)"));
        assert_eq!(bt.category.as_deref(), Some("Download"));
        assert_eq!(bt.name, None);

        let quic = &lines[&Key::new("udp", addr("192.0.2.10:51791"), addr("203.0.113.10:443"))];
        assert!(!quic.bidirectional);
        assert_eq!(quic.proto, "QUIC");

        let icmp = &lines[&Key::new("icmp", addr("192.0.2.10:0"), addr("203.0.113.10:0"))];
        assert_eq!(icmp.proto, "ICMP");

        let unknown = &lines[&Key::new("tcp", addr("192.0.2.10:51730"), addr("203.0.113.10:6881"))];
        assert_eq!(unknown.proto, "Unknown");
        assert_eq!(unknown.confidence.as_deref(), Some("Unknown"));
        assert_eq!(unknown.category, None);
    }

    #[test]
    fn reads_the_ndpi_version() {
        assert_eq!(
            parse_ndpi_version("Welcome to nDPI 4.2.0\n\nndpiReader -i <file|device> ...")
                .as_deref(),
            Some("4.2.0")
        );
        assert_eq!(parse_ndpi_version("usage: something else"), None);
    }

    #[test]
    fn filters_one_flow() {
        let key = Key::new("udp", addr("203.0.113.10:6881"), addr("192.0.2.10:6881"));
        assert_eq!(
            flow_filter(&key),
            "udp and host 192.0.2.10 and host 203.0.113.10 and port 6881 and port 6881"
        );
        let key = Key::new("icmp", addr("192.0.2.10:0"), addr("203.0.113.10:0"));
        assert_eq!(
            flow_filter(&key),
            "icmp and host 192.0.2.10 and host 203.0.113.10"
        );
    }

    #[test]
    fn names_compare_case_folded_without_dot_or_port() {
        assert_eq!(normalise_name("WWW.Twitch.TV.", Some(443)), "www.twitch.tv");
        assert_eq!(
            normalise_name("203.0.113.10:6969", Some(6969)),
            "203.0.113.10"
        );
        assert_eq!(
            normalise_name("203.0.113.10:6969", Some(80)),
            "203.0.113.10:6969"
        );
    }

    fn hello(len: usize) -> Vec<u8> {
        let body = len - 4;
        let mut v = vec![1, (body >> 16) as u8, (body >> 8) as u8, body as u8];
        v.resize(len, 0xaa);
        v
    }

    #[test]
    fn ndpi_quic_reassembly_takes_in_order_fragments_only() {
        let ch = hello(100);
        // In order over two Initials: complete.
        let in_order = vec![vec![(0, ch[..60].to_vec())], vec![(60, ch[60..].to_vec())]];
        let sim = simulate_ndpi_quic(&in_order);
        assert!(sim.complete);
        assert_eq!(
            (sim.assembled, sim.skipped, sim.hello_len),
            (100, 0, Some(100))
        );
        // Chromium's way: the first Initial starts mid-stream.
        let shuffled = vec![vec![
            (60, ch[60..].to_vec()),
            (0, ch[..30].to_vec()),
            (30, ch[30..60].to_vec()),
        ]];
        let sim = simulate_ndpi_quic(&shuffled);
        assert!(!sim.complete);
        assert_eq!((sim.assembled, sim.skipped), (60, 1));
        assert_eq!(sim.offsets, vec![vec![60, 0, 30]]);
    }
}
