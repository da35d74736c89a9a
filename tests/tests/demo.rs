//! The README's demo command works (`cargo xtask demo` runs `classifier-lab demo`): a lab
//! comes up, flows are counted and shown, and everything is removed at the end.

use std::process::Command;

use classifier_tests::{classifier_bin, classifier_lab_bin, privileged};

#[test]
fn demo_shows_counted_flows_and_cleans_up() {
    if !privileged("demo_shows_counted_flows_and_cleans_up") {
        return;
    }
    let output = Command::new(classifier_lab_bin())
        .args(["demo", "--duration", "4s", "--report-interval", "2s"])
        .arg("--classifier")
        .arg(classifier_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {stdout}\n{stderr}");
    let final_table = stdout
        .split("== final flow table")
        .nth(1)
        .unwrap_or_else(|| panic!("no final table in: {stdout}"));
    // The first sites the clients visit, classified by name, over IPv4 and IPv6, with
    // counters both ways.
    for (name, category, app, method) in [
        ("www.youtube.com", "streaming-video", "youtube", "sni"),
        ("www.bbc.co.uk", "uncategorized", "http", "host"),
    ] {
        for family in ["203.0.113.10", "[2001:db8:3::10]"] {
            let line = final_table
                .lines()
                .find(|l| l.contains(name) && l.contains(family))
                .unwrap_or_else(|| panic!("no {name} flow to {family} in: {final_table}"));
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(
                fields.contains(&category) && fields.contains(&app) && fields.contains(&method),
                "{name}: expected {category} / {app} / {method} in: {line}"
            );
            let counters: Vec<u64> = fields.iter().filter_map(|f| f.parse().ok()).collect();
            assert!(
                counters.len() >= 4 && counters[counters.len() - 4..].iter().all(|&n| n > 0),
                "counters of {line}"
            );
        }
    }
    assert!(!stdout.contains("error"), "demo reported errors: {stdout}");
    let printed: Vec<&str> = stdout
        .split_whitespace()
        .filter(|word| word.starts_with("clab-"))
        .collect();
    assert!(
        !printed.is_empty(),
        "the demo names its namespaces: {stdout}"
    );
    let listing = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for netns in printed {
        assert!(
            !listing.contains(netns),
            "{netns} is still there after the demo"
        );
    }
}
