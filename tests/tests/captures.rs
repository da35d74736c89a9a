//! Real clients' captures (tests/captures, made in the lab by regenerate.sh) through the real
//! datapath, offline (`classify-pcap`'s replay): every flow the manifest lists must come out
//! with the name, detection method and ECH flag an independent parser (tests/src/wire) found
//! in the packets, and the default council policy's verdicts.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use classifier_tests::privileged;
use classifier_user::{
    flows::FlowRecord,
    policy::Policy,
    replay::{Moment, Replay},
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    capture: Vec<CaptureEntry>,
}

#[derive(Debug, Deserialize)]
struct CaptureEntry {
    file: String,
    flow: Vec<ExpectedFlow>,
}

#[derive(Debug, Deserialize)]
struct ExpectedFlow {
    client: SocketAddr,
    server: SocketAddr,
    protocol: String,
    name: String,
    detection: String,
    ech: bool,
    client_hello_segments: u32,
}

fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(captures_dir().join("manifest.toml")).unwrap();
    toml::from_str(&text).expect("manifest.toml parses")
}

/// The flows of one capture, replayed with the default policy in `period`, by endpoints.
fn replay(file: &str, period: &str) -> BTreeMap<(SocketAddr, SocketAddr), FlowRecord> {
    let moment = Moment {
        period: period.into(),
        at: jiff::Timestamp::now(),
    };
    let mut replay = Replay::new(Policy::default_council(), &moment).unwrap();
    replay
        .file(&captures_dir().join(file))
        .unwrap_or_else(|e| panic!("{file}: {e:#}"));
    let replayed = replay.finish().unwrap();
    assert_eq!(replayed.counts.refused, 0, "{file}: packets refused");
    replayed
        .flows
        .into_iter()
        .map(|flow| ((flow.client, flow.server), flow))
        .collect()
}

/// The name as the manifest records it (as sent) compared with ours: an HTTP Host's port
/// is not part of the name we classify by.
fn same_name(expected: &str, ours: Option<&str>, server: SocketAddr) -> bool {
    let port_suffix = format!(":{}", server.port());
    let expected = expected.strip_suffix(&port_suffix).unwrap_or(expected);
    expected == ours.unwrap_or("")
}

/// Our method matches the manifest's; a BitTorrent peer flow may instead be known from the
/// peer cache (a tracker reply or an earlier flow in the capture named the peer) — which
/// is the point of the cache.
fn same_method(expected: &str, ours: &str) -> bool {
    expected == ours
        || (expected.starts_with("bt-") && expected != "bt-tracker" && ours == "peer-cache")
}

#[test]
fn every_captured_flow_gets_the_name_method_and_ech_the_packets_show() {
    if !privileged("every_captured_flow_gets_the_name_method_and_ech_the_packets_show") {
        return;
    }
    let manifest = manifest();
    assert!(
        manifest.capture.len() >= 10,
        "the manifest lists the captures"
    );
    let mut failures = Vec::new();
    for capture in &manifest.capture {
        // Outside working hours nothing in these captures is blocked, so every packet
        // reaches the classifier as it did on the wire.
        let flows = replay(&capture.file, "outside");
        for expected in &capture.flow {
            let Some(ours) = flows.get(&(expected.client, expected.server)) else {
                failures.push(format!(
                    "{}: no flow {} -> {} (we have {:?})",
                    capture.file,
                    expected.client,
                    expected.server,
                    flows.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            let what = format!(
                "{}: {} {} -> {}",
                capture.file, expected.protocol, expected.client, expected.server
            );
            if ours.protocol != expected.protocol {
                failures.push(format!(
                    "{what}: protocol {} not {}",
                    ours.protocol, expected.protocol
                ));
            }
            if !same_name(&expected.name, ours.name.as_deref(), expected.server) {
                failures.push(format!(
                    "{what}: name {:?} not {:?}",
                    ours.name, expected.name
                ));
            }
            if !same_method(&expected.detection, &ours.method) {
                failures.push(format!(
                    "{what}: method {} not {}",
                    ours.method, expected.detection
                ));
            }
            if ours.ech != expected.ech {
                failures.push(format!("{what}: ECH {} not {}", ours.ech, expected.ech));
            }
            if ours.unreadable {
                failures.push(format!(
                    "{what}: ClientHello over {} segments counted unreadable",
                    expected.client_hello_segments
                ));
            }
            if !ours.evasion.is_empty() {
                failures.push(format!(
                    "{what}: a real client's flow taken for evasion: {:?}",
                    ours.evasion
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn split_client_hellos_of_real_browsers_are_in_the_captures() {
    // The captures must keep exercising what they are for: a browser ClientHello (with the
    // post-quantum key share) over more than one segment.
    let split: Vec<String> = manifest()
        .capture
        .iter()
        .flat_map(|c| c.flow.iter().map(move |f| (c, f)))
        .filter(|(_, f)| f.client_hello_segments >= 2)
        .map(|(c, _)| c.file.clone())
        .collect();
    assert!(split.iter().any(|f| f.starts_with("chromium")), "{split:?}");
    assert!(split.iter().any(|f| f.starts_with("firefox")), "{split:?}");
}

#[test]
fn the_default_policy_blocks_file_sharing_and_shapes_streaming_at_work() {
    if !privileged("the_default_policy_blocks_file_sharing_and_shapes_streaming_at_work") {
        return;
    }
    for capture in &manifest().capture {
        for (endpoints, flow) in replay(&capture.file, "working") {
            let expected = match flow.category.as_str() {
                "file-sharing" => "block",
                "streaming-video" | "streaming-audio" => "shape",
                "uncategorized" => "allow",
                other => panic!(
                    "{}: {endpoints:?}: unexpected category {other}",
                    capture.file
                ),
            };
            assert_eq!(
                flow.verdict, expected,
                "{}: {endpoints:?} ({})",
                capture.file, flow.category
            );
        }
    }
}

#[test]
fn classify_pcap_prints_one_json_object_per_flow() {
    if !privileged("classify_pcap_prints_one_json_object_per_flow") {
        return;
    }
    let output = std::process::Command::new(classifier_tests::classifier_bin())
        .args(["classify-pcap", "--json", "--period", "working"])
        .arg(captures_dir().join("openssl-uppercase-trailing-dot.pcap"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let flows: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(flows.len(), 2, "{flows:?}");
    let twitch = flows
        .iter()
        .find(|f| f["name"] == "WWW.Twitch.TV.")
        .expect("the uppercase, trailing-dot name as sent");
    for field in [
        "client", "server", "proto", "name", "category", "app", "method", "verdict",
    ] {
        assert!(twitch.get(field).is_some(), "no `{field}` in {twitch}");
    }
    assert_eq!(twitch["category"], "streaming-video");
    assert_eq!(twitch["app"], "twitch");
    assert_eq!(twitch["method"], "sni");
    assert_eq!(twitch["verdict"], "shape");
    assert_eq!(twitch["proto"], "tcp");
}

#[test]
fn classify_pcap_names_a_file_that_is_not_a_capture() {
    let not_a_capture =
        std::env::temp_dir().join(format!("not-a-capture-{}.pcap", std::process::id()));
    std::fs::write(&not_a_capture, b"this is a text file, not a capture\n").unwrap();
    let output = std::process::Command::new(classifier_tests::classifier_bin())
        .args(["classify-pcap"])
        .arg(&not_a_capture)
        .output()
        .unwrap();
    std::fs::remove_file(&not_a_capture).unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !nix::unistd::geteuid().is_root() {
        return; // the load fails first, which another test covers
    }
    assert!(
        stderr.contains(&not_a_capture.display().to_string()) && stderr.contains("pcap"),
        "{stderr}"
    );
}

/// `pcap` rewritten as pcapng (one interface, Ethernet), as Wireshark saves captures.
fn as_pcapng(pcap: &std::path::Path, out: &std::path::Path) {
    use pcap_file::{
        DataLink,
        pcap::PcapReader,
        pcapng::{
            PcapNgWriter,
            blocks::{
                enhanced_packet::EnhancedPacketBlock,
                interface_description::InterfaceDescriptionBlock,
            },
        },
    };
    let mut reader = PcapReader::new(std::fs::File::open(pcap).unwrap()).unwrap();
    assert_eq!(reader.header().datalink, DataLink::ETHERNET);
    let mut writer = PcapNgWriter::new(std::fs::File::create(out).unwrap()).unwrap();
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: packet.timestamp,
                original_len: packet.orig_len,
                data: packet.data,
                options: vec![],
            })
            .unwrap();
    }
}

#[test]
fn classify_pcap_reads_pcapng_with_a_candidate_policy_as_text() {
    if !privileged("classify_pcap_reads_pcapng_with_a_candidate_policy_as_text") {
        return;
    }
    let scratch = std::env::temp_dir().join(format!("classifier-pcapng-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let capture = scratch.join("twitch.pcapng");
    as_pcapng(
        &captures_dir().join("openssl-uppercase-trailing-dot.pcap"),
        &capture,
    );
    // A candidate policy that calls Twitch something else and blocks it at all times.
    let policy = scratch.join("candidate.toml");
    std::fs::write(
        &policy,
        "[categories.candidate-video]\ndomains = [\"twitch.tv\"]\n\
         [[rules]]\ncategories = \"candidate-video\"\naction = \"block\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(classifier_tests::classifier_bin())
        .arg("classify-pcap")
        .arg(&capture)
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per flow: {stdout}");
    let twitch = lines
        .iter()
        .find(|l| l.contains("[name: WWW.Twitch.TV.]"))
        .unwrap_or_else(|| panic!("the Twitch flow: {stdout}"));
    assert!(
        twitch.trim_start().starts_with('1') || twitch.trim_start().starts_with('2'),
        "numbered as ndpiReader numbers flows: {twitch}"
    );
    for part in [
        "TCP ",
        " <-> ",
        "[method: sni]",
        "[cat: candidate-video]",
        "[verdict: block]",
    ] {
        assert!(twitch.contains(part), "`{part}` in {twitch}");
    }
    assert!(
        stderr.contains("candidate.toml"),
        "the summary names the policy: {stderr}"
    );
}
