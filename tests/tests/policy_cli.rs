//! The policy commands as a network team uses them, without a daemon: `policy check`,
//! `policy explain`, and an exception granted, seen, and ended with `exceptions`.

use std::{path::PathBuf, process::Output};

use classifier_tests::classifier_bin;

/// A scratch directory removed at the end, also on failure.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("classifier-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn classifier(args: &[&str]) -> Output {
    std::process::Command::new(classifier_bin())
        .args(args)
        .output()
        .expect("classifier runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn explain_json(exceptions: &str, client: &str, target: &str, at: &str) -> serde_json::Value {
    let out = stdout(&classifier(&[
        "policy",
        "explain",
        client,
        target,
        "--at",
        at,
        "--exceptions",
        exceptions,
        "--json",
    ]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn an_exception_is_granted_explained_listed_and_ended() {
    let scratch = Scratch::new("exceptions");
    let file = scratch.0.join("exceptions.toml");
    let file = file.to_str().unwrap();
    let socket = scratch.0.join("no-daemon.sock");
    let socket = socket.to_str().unwrap();
    // Monday 23 November 2026, 10:00 GMT: working hours.
    let monday = "2026-11-23T10:00:00Z";

    let blocked = explain_json(file, "192.0.2.10", "www.dropbox.com", monday);
    assert_eq!(blocked["category"], "cloud-storage");
    assert_eq!(blocked["action"], "block");

    let added = stdout(&classifier(&[
        "exceptions",
        "add",
        "--client",
        "192.0.2.10",
        "--category",
        "cloud-storage",
        "--approved-by",
        "J. Smith (line manager)",
        "--reference",
        "RITM0012345",
        "--reason",
        "Sharing plans with a contractor",
        "--expires",
        "2099-03-31",
        "--exceptions",
        file,
        "--control-socket",
        socket,
    ]));
    assert!(added.contains("RITM0012345"), "{added}");
    assert!(added.contains("no daemon"), "{added}");

    let allowed = explain_json(file, "192.0.2.10", "www.dropbox.com", monday);
    assert_eq!(allowed["action"], "allow");
    assert_eq!(allowed["decided_by"]["kind"], "client-exception");
    assert_eq!(allowed["decided_by"]["reference"], "RITM0012345");
    // Another client is still blocked.
    assert_eq!(
        explain_json(file, "192.0.2.11", "www.dropbox.com", monday)["action"],
        "block"
    );

    let listed = stdout(&classifier(&[
        "exceptions",
        "list",
        "--json",
        "--exceptions",
        file,
    ]));
    let entry: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(entry["active"], true);
    assert_eq!(entry["approved_by"], "J. Smith (line manager)");

    stdout(&classifier(&[
        "exceptions",
        "expire",
        "RITM0012345",
        "--exceptions",
        file,
        "--control-socket",
        socket,
    ]));
    let now = jiff::Timestamp::now().to_string();
    assert_eq!(
        explain_json(file, "192.0.2.10", "www.dropbox.com", &now)["action"],
        "block"
    );
    let listed = stdout(&classifier(&[
        "exceptions",
        "list",
        "--json",
        "--exceptions",
        file,
    ]));
    let entry: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(entry["active"], false, "ended, still listed: {entry}");
}

#[test]
fn a_bad_exception_is_refused_and_the_file_is_unchanged() {
    let scratch = Scratch::new("bad-exception");
    let file = scratch.0.join("exceptions.toml");
    let file = file.to_str().unwrap();
    let refused = classifier(&[
        "exceptions",
        "add",
        "--client",
        "192.0.2.10",
        "--category",
        "no-such-category",
        "--approved-by",
        "A",
        "--reference",
        "R1",
        "--reason",
        "r",
        "--expires",
        "2099-01-01",
        "--exceptions",
        file,
    ]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("no category `no-such-category`") && message.contains("not written"),
        "{message}"
    );
    assert!(!std::path::Path::new(file).exists(), "nothing written");
}

#[test]
fn policy_check_names_file_line_and_field() {
    let scratch = Scratch::new("check");
    let good = scratch.0.join("good.toml");
    std::fs::write(&good, classifier_user::policy::DEFAULT_POLICY).unwrap();
    let out = stdout(&classifier(&["policy", "check", good.to_str().unwrap()]));
    assert!(out.contains("valid"), "{out}");

    let bad = scratch.0.join("bad.toml");
    let text = classifier_user::policy::DEFAULT_POLICY
        .replace("hours = \"08:30-17:00\"", "hours = \"08:30-25:00\"");
    std::fs::write(&bad, &text).unwrap();
    let refused = classifier(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    let line = text
        .lines()
        .position(|l| l.contains("08:30-25:00"))
        .unwrap()
        + 1;
    assert!(
        message.contains(&format!("bad.toml:{line}:"))
            && message.contains("schedule.period[1].hours"),
        "{message}"
    );
}
