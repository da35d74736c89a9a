//! The evasion captures (tests/captures/evasion: real clients' ClientHellos and an HTTP
//! request re-sent the ways zapret, GoodbyeDPI, byedpi and SpoofDPI send them, made by
//! make-evasion-captures from the real captures) through `classifier classify-pcap --json`
//! with the built-in council policy at work: every flow must come out with the name the
//! server reads (none where nothing can be read), its category and verdict, a conflict's
//! second name, and the evasion notes the manifest lists. All mismatches are reported
//! together. The captures must also be what the generator makes today, byte for byte.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use classifier_tests::{classifier_bin, harness::MONDAY_AT_WORK, privileged};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    capture: Vec<Capture>,
}

#[derive(Debug, Deserialize)]
struct Capture {
    file: String,
    technique: String,
    flow: Vec<Expected>,
}

#[derive(Debug, Deserialize)]
struct Expected {
    client: SocketAddr,
    server: SocketAddr,
    family: String,
    real_name: String,
    /// "" for none.
    name: String,
    category: String,
    verdict: String,
    #[serde(default)]
    second_name: String,
    #[serde(default)]
    second_category: String,
    unreadable: bool,
    evasion: Vec<String>,
}

/// One line of `classify-pcap --json`, the fields checked here.
#[derive(Debug, Deserialize)]
struct Ours {
    capture: PathBuf,
    client: SocketAddr,
    server: SocketAddr,
    name: Option<String>,
    category: String,
    verdict: String,
    unreadable: bool,
    #[serde(default)]
    evasion: Vec<String>,
    second_name: Option<String>,
    second_category: Option<String>,
}

fn evasion_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/evasion")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(evasion_dir().join("manifest.toml"))
        .expect("tests/captures/evasion/manifest.toml (make-evasion-captures writes it)");
    toml::from_str(&text).expect("the evasion manifest parses")
}

/// Flows of one capture by their endpoints.
type Flows = BTreeMap<(SocketAddr, SocketAddr), Ours>;

/// `classifier classify-pcap FILE... --json --at <Monday, working hours>` (one run, each
/// capture replayed on its own): each capture's flows.
fn classify(files: &[PathBuf]) -> BTreeMap<PathBuf, Flows> {
    let output = Command::new(classifier_bin())
        .arg("classify-pcap")
        .args(files)
        .args(["--json", "--at", MONDAY_AT_WORK])
        .output()
        .expect("classify-pcap runs");
    assert!(
        output.status.success(),
        "classify-pcap: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut captures: BTreeMap<PathBuf, Flows> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if line.trim().is_empty() {
            continue;
        }
        let flow: Ours =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("classify-pcap line {line}: {e}"));
        captures
            .entry(flow.capture.clone())
            .or_default()
            .insert((flow.client, flow.server), flow);
    }
    captures
}

/// Where `ours` differs from `expected`.
fn mismatches(expected: &Expected, ours: &Ours) -> Vec<String> {
    let mut out = Vec::new();
    let name = ours.name.clone().unwrap_or_default();
    if expected.second_name.is_empty() {
        if name != expected.name || ours.category != expected.category {
            out.push(format!(
                "name {:?} ({}), want {:?} ({})",
                ours.name, ours.category, expected.name, expected.category
            ));
        }
        if let Some(second) = &ours.second_name {
            out.push(format!("a second name {second:?}, want none"));
        }
    } else {
        // Two versions of the same bytes: the flow answers to both names, in either order.
        let got = BTreeSet::from([
            (name, ours.category.clone()),
            (
                ours.second_name.clone().unwrap_or_default(),
                ours.second_category.clone().unwrap_or_default(),
            ),
        ]);
        let want = BTreeSet::from([
            (expected.name.clone(), expected.category.clone()),
            (
                expected.second_name.clone(),
                expected.second_category.clone(),
            ),
        ]);
        if got != want {
            out.push(format!("names (with categories) {got:?}, want {want:?}"));
        }
    }
    if ours.verdict != expected.verdict {
        out.push(format!(
            "verdict {}, want {}",
            ours.verdict, expected.verdict
        ));
    }
    if ours.unreadable != expected.unreadable {
        out.push(format!(
            "unreadable {}, want {}",
            ours.unreadable, expected.unreadable
        ));
    }
    for note in &expected.evasion {
        if !ours.evasion.contains(note) {
            out.push(format!("evasion {:?} lacks `{note}`", ours.evasion));
        }
    }
    out
}

#[test]
fn every_evasion_capture_gets_the_real_name_category_and_verdict_at_work() {
    if !privileged("every_evasion_capture_gets_the_real_name_category_and_verdict_at_work") {
        return;
    }
    let manifest = manifest();
    // One run for all: loading the datapath takes seconds (mostly the verifier's).
    let files: Vec<PathBuf> = manifest
        .capture
        .iter()
        .map(|capture| evasion_dir().join(&capture.file))
        .collect();
    let results = classify(&files);
    let no_flows = Flows::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (capture, file) in manifest.capture.iter().zip(&files) {
        let flows = results.get(file).unwrap_or(&no_flows);
        for expected in &capture.flow {
            let what = format!(
                "{} ({}, {} {} -> {}, really {})",
                capture.file,
                capture.technique,
                expected.family,
                expected.client,
                expected.server,
                expected.real_name
            );
            let Some(ours) = flows.get(&(expected.client, expected.server)) else {
                failures.push(format!(
                    "{what}: no such flow (classify-pcap has {:?})",
                    flows.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            checked += 1;
            for mismatch in mismatches(expected, ours) {
                failures.push(format!("{what}: {mismatch}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches over {checked} flows:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_evasion_manifest_covers_every_technique_over_ipv4_and_ipv6() {
    let manifest = manifest();
    let techniques: BTreeMap<&str, BTreeSet<&str>> = manifest
        .capture
        .iter()
        .map(|c| {
            (
                c.technique.as_str(),
                c.flow.iter().map(|f| f.family.as_str()).collect(),
            )
        })
        .collect();
    for technique in [
        "split-1",
        "split-2",
        "split-in-name",
        "segments-20",
        "mss-536",
        "disorder",
        "reverse",
        "ttl1-disorder",
        "tlsrec-1",
        "tlsrec-in-name",
        "tlsrec-6",
        "tlsrec-disorder",
        "decoy-badsum",
        "decoy-ttl1",
        "decoy-ttl",
        "decoy-badseq",
        "decoy-badack",
        "decoy-noack",
        "decoy-md5",
        "decoy-ts",
        "decoy-conflict",
        "ipfrag",
        "http-split-1",
    ] {
        let families = techniques.get(technique);
        assert_eq!(
            families,
            Some(&BTreeSet::from(["IPv4", "IPv6"])),
            "{technique}: both address families"
        );
    }
    for capture in &manifest.capture {
        for flow in &capture.flow {
            assert!(!flow.real_name.is_empty(), "{}: a real name", capture.file);
            if flow.unreadable {
                assert_eq!(
                    (
                        flow.name.as_str(),
                        flow.category.as_str(),
                        flow.verdict.as_str()
                    ),
                    ("", "unreadable", "block"),
                    "{}: unreadable is a class, blocked at work",
                    capture.file
                );
            }
            assert_eq!(
                flow.second_name.is_empty(),
                !flow.evasion.iter().any(|e| e == "conflict"),
                "{}: a second name exactly for conflicts",
                capture.file
            );
            let size = std::fs::metadata(evasion_dir().join(&capture.file))
                .unwrap()
                .len();
            assert!(
                size < 16 * 1024,
                "{}: {size} bytes: keep it small",
                capture.file
            );
        }
    }
}

#[test]
fn the_evasion_captures_are_what_the_generator_makes() {
    let out = std::env::temp_dir().join(format!("evasion-captures-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_make-evasion-captures"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("make-evasion-captures runs");
    assert!(
        output.status.success(),
        "make-evasion-captures: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read(entry.path()).unwrap(),
                )
            })
            .collect()
    };
    let made = files(&out);
    let committed = files(&evasion_dir());
    std::fs::remove_dir_all(&out).unwrap();
    let differ: Vec<&String> = made
        .keys()
        .chain(committed.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|name| made.get(*name) != committed.get(*name))
        .collect();
    assert!(
        differ.is_empty(),
        "tests/captures/evasion differs from what make-evasion-captures makes from \
         tests/captures now: {differ:?}; run `cargo run -p classifier-tests --bin \
         make-evasion-captures`"
    );
}
