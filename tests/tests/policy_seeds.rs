//! The councils' two policies, line by line, against the shipped default policy: each line a
//! gateway can enforce is asked of `classifier policy explain` at the moments it speaks of
//! (working hours in winter and summer, lunch, before and after work, a weekend, bank
//! holidays), and the default policy's answer is checked against what the line says.
//!
//! GCC: Gloucestershire County Council's Internet and Digital Communications Policy;
//! SCC: Somerset County Council's Internet and Social Media Policy (`shared/seeds/`).

use std::{path::PathBuf, process::Output};

use classifier_tests::classifier_bin;
use classifier_user::policy::DEFAULT_POLICY;
use serde_json::Value;

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

/// A staff PC (group `staff` in the default policy).
const STAFF: &str = "192.0.2.10";
/// A guest on the public Wi-Fi: the councils' lines bind it the same way.
const GUEST: &str = "192.0.2.200";

/// The moments the policies speak of, in the site's time zone (Europe/London).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// Working hours: personal use is not allowed (GCC 9.0, SCC 6.4).
    Working,
    /// Lunch and before or after work, weekends and bank holidays: personal use allowed
    /// within the policies' limits.
    Personal,
}

/// (moment, what it is, the period the default policy must have in force then).
const MOMENTS: [(&str, &str, When, &str); 10] = [
    (
        "2026-11-23T10:00:00Z",
        "Monday 10:00 GMT",
        When::Working,
        "working",
    ),
    (
        "2026-07-13T08:45:00Z",
        "Monday 09:45 BST (08:45 UTC)",
        When::Working,
        "working",
    ),
    (
        "2026-03-30T07:45:00Z",
        "the Monday after the clocks go forward, 08:45 BST",
        When::Working,
        "working",
    ),
    (
        "2026-11-23T12:30:00Z",
        "Monday lunch, 12:30 GMT",
        When::Personal,
        "lunch",
    ),
    (
        "2026-11-23T07:30:00Z",
        "Monday before work, 07:30 GMT",
        When::Personal,
        "outside",
    ),
    (
        "2026-07-13T16:30:00Z",
        "Monday after work, 17:30 BST",
        When::Personal,
        "outside",
    ),
    (
        "2026-11-28T10:00:00Z",
        "Saturday 10:00",
        When::Personal,
        "outside",
    ),
    (
        "2026-12-25T10:00:00Z",
        "Christmas Day (a Friday)",
        When::Personal,
        "outside",
    ),
    (
        "2026-08-31T09:00:00Z",
        "the August bank holiday, 10:00 BST",
        When::Personal,
        "outside",
    ),
    (
        "2026-10-26T08:00:00Z",
        "the Monday after the clocks go back, 08:00 GMT (before work)",
        When::Personal,
        "outside",
    ),
];

/// What the default policy must answer for a line.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Blocked at every moment.
    Blocked,
    /// Blocked in working hours; outside them the line leaves it to the council and the
    /// default allows it.
    BlockedAtWork,
    /// Occasional short clips: a few minutes at full speed, then a rate that carries no
    /// continual audio; more minutes outside work than at work.
    ShortClips,
    /// Nothing in the policies forbids it: allowed at every moment.
    Allowed,
}

/// One enforceable line of the policies: where it is, what it says (abridged), what is
/// asked of `explain` for it, the category that must answer, and the answer.
struct Line {
    source: &'static str,
    says: &'static str,
    target: &'static str,
    category: &'static str,
    expect: Expect,
}

const LINES: &[Line] = &[
    Line {
        source: "GCC 8.0d; SCC 6.1.2",
        says: "must not access sites that are pornographic",
        target: "www.pornhub.com",
        category: "adult",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0d; SCC 6.1.2",
        says: "subversive or violent; violence, weapons are blocked",
        target: "www.gunbroker.com",
        category: "violence-weapons",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0d; SCC 6.1.2, 6.1.5",
        says: "illegal; no digital media in breach of copyright",
        target: "thepiratebay.org",
        category: "piracy",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0d; SCC 6.1.3, 6.1.9",
        says: "offensive or of an extreme political nature; PREVENT",
        target: "hate.example.org",
        category: "extremist",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0e, 8.0f",
        says: "must not use online gaming sites or access gaming services",
        target: "store.steampowered.com",
        category: "gaming",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0e; SCC 6.1.2",
        says: "must not use betting sites; gambling is blocked",
        target: "www.bet365.com",
        category: "gambling",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0e",
        says: "must not enter 'money making' sites",
        target: "www.swagbucks.com",
        category: "money-making",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0f",
        says: "no private buying, selling or online trading using sites such as eBay",
        target: "www.ebay.co.uk",
        category: "online-trading",
        expect: Expect::Blocked,
    },
    Line {
        source: "SCC 6.1.8",
        says: "cloud storage is prohibited other than in approved circumstances",
        target: "www.dropbox.com",
        category: "cloud-storage",
        expect: Expect::Blocked,
    },
    Line {
        source: "SCC 6.1.7",
        says: "must not use unauthorised file sharing and torrent services (a handshake)",
        target: "protocol/bittorrent",
        category: "file-sharing",
        expect: Expect::Blocked,
    },
    Line {
        source: "SCC 6.1.7",
        says: "must not use unauthorised file sharing and torrent services (a port)",
        target: "tcp/6881",
        category: "file-sharing",
        expect: Expect::Blocked,
    },
    Line {
        source: "SCC 6.1.7",
        says: "must not use unauthorised file sharing and torrent services (a tracker)",
        target: "tracker.opentrackr.org",
        category: "file-sharing",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0a; SCC 6.1.7",
        says: "must not circumvent security or bypass filtering (DNS over HTTPS)",
        target: "dns.google",
        category: "doh",
        expect: Expect::Blocked,
    },
    Line {
        source: "GCC 8.0a; SCC 6.1.7",
        says: "must not bypass filtering (QUIC whose name is not read)",
        target: "protocol/quic",
        category: "quic",
        expect: Expect::BlockedAtWork,
    },
    Line {
        source: "GCC 8.0a; SCC 6.1.7",
        says: "must not bypass filtering (first bytes made unreadable)",
        target: "unreadable",
        category: "unreadable",
        expect: Expect::BlockedAtWork,
    },
    Line {
        source: "GCC 8.0f; SCC 6.4.1",
        says: "no streaming services at work; outside work occasional short clips only, \
               no TV, films or continual broadcasts (video)",
        target: "www.youtube.com",
        category: "streaming-video",
        expect: Expect::ShortClips,
    },
    Line {
        source: "GCC 8.0f; SCC 6.4.1",
        says: "... (TV and films)",
        target: "vs-dash-uk.vod-dash-uk-live.akamaized.net",
        category: "streaming-video",
        expect: Expect::ShortClips,
    },
    Line {
        source: "GCC 8.0f; SCC 6.4.1",
        says: "... (radio and playlists)",
        target: "open.spotify.com",
        category: "streaming-audio",
        expect: Expect::ShortClips,
    },
    Line {
        source: "GCC 8.0f; SCC 6.4.1",
        says: "... (internet radio)",
        target: "tunein.com",
        category: "streaming-audio",
        expect: Expect::ShortClips,
    },
    Line {
        source: "GCC 9.0; SCC 6.4",
        says: "business use is what the connection is for: work sites are never limited",
        target: "www.gov.uk",
        category: "uncategorized",
        expect: Expect::Allowed,
    },
];

/// The shipped policy, with one test list in the extremist category (which ships empty:
/// a council adds UT1's `agressif` list the same way) in a UT1-style directory.
fn shipped_policy_with_an_extremist_list(scratch: &Scratch) -> PathBuf {
    let list = scratch.0.join("agressif");
    std::fs::create_dir_all(&list).unwrap();
    std::fs::write(list.join("domains"), "hate.example.org\n").unwrap();
    let section = "[categories.extremist]\n";
    assert!(
        DEFAULT_POLICY.contains(section),
        "the shipped policy has an extremist category"
    );
    let text = DEFAULT_POLICY.replace(
        section,
        &format!("{section}lists = [\"{}\"]\n", list.display()),
    );
    let file = scratch.0.join("policy.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn explain(policy: &PathBuf, exceptions: &PathBuf, client: &str, target: &str, at: &str) -> Value {
    let output: Output = std::process::Command::new(classifier_bin())
        .args(["policy", "explain", client, target, "--at", at, "--json"])
        .arg("--policy")
        .arg(policy)
        .arg("--exceptions")
        .arg(exceptions)
        .output()
        .expect("classifier runs");
    assert!(
        output.status.success(),
        "explain {client} {target} at {at}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("explain --json answers JSON")
}

/// The rate in bits per second of a `shape 16kbit per client after ...` action.
fn shaped_rate_bps(action: &str) -> u64 {
    let rate = action
        .strip_prefix("shape ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a shape action: {action}"));
    classifier_user::policy::rules::parse_rate(rate).unwrap()
}

/// Checks one answer against the line; returns the minutes of clips at full speed an hour
/// for [`Expect::ShortClips`].
fn check(line: &Line, when: When, moment: &str, answer: &Value) -> Option<u64> {
    let action = answer["action"].as_str().unwrap();
    let context = format!(
        "{} ({}): {} at {moment}: {answer}",
        line.source, line.says, line.target
    );
    assert_eq!(answer["category"], line.category, "{context}");
    match (line.expect, when) {
        (Expect::Blocked, _) | (Expect::BlockedAtWork, When::Working) => {
            assert_eq!(action, "block", "{context}");
            None
        }
        (Expect::BlockedAtWork, When::Personal) | (Expect::Allowed, _) => {
            assert_eq!(action, "allow", "{context}");
            None
        }
        (Expect::ShortClips, _) => {
            assert!(action.starts_with("shape "), "{context}");
            // Why 64 kbit/s at most: the policy's comment (16 kbit/s; music services'
            // lowest quality is about 24 kbit/s).
            assert!(shaped_rate_bps(action) <= 64_000, "{context}");
            let allowance = &answer["allowance"];
            let minutes = allowance["minutes_allowed"]
                .as_u64()
                .unwrap_or_else(|| panic!("a time allowance: {context}"));
            assert!(
                action.contains(&format!("{minutes} minutes/hour")),
                "{context}"
            );
            assert!(
                allowance["bytes_allowed"].as_u64().is_some(),
                "a volume cap too (no media downloaded at full speed): {context}"
            );
            assert_eq!(allowance["measured"], false, "{context}");
            Some(minutes)
        }
    }
}

#[test]
fn the_default_policy_answers_every_enforceable_line_of_the_seeds_at_every_moment() {
    let scratch = Scratch::new("policy-seeds");
    let policy = shipped_policy_with_an_extremist_list(&scratch);
    let exceptions = scratch.0.join("exceptions.toml");
    std::fs::write(&exceptions, "").unwrap();
    let mut clip_minutes: Vec<(When, u64)> = Vec::new();
    for (moment, what, when, period) in MOMENTS {
        for client in [STAFF, GUEST] {
            for line in LINES {
                let answer = explain(&policy, &exceptions, client, line.target, moment);
                assert_eq!(answer["period"], period, "{what} ({moment}): {answer}");
                if let Some(minutes) = check(line, when, moment, &answer) {
                    clip_minutes.push((when, minutes));
                }
            }
        }
    }
    // "A few minutes" at work, "a larger allowance" outside it, never an hour's worth.
    let minutes = |w: When| -> Vec<u64> {
        clip_minutes
            .iter()
            .filter(|(when, _)| *when == w)
            .map(|(_, m)| *m)
            .collect()
    };
    let (at_work, personal) = (minutes(When::Working), minutes(When::Personal));
    assert!(!at_work.is_empty() && !personal.is_empty());
    let most_at_work = *at_work.iter().max().unwrap();
    let least_personal = *personal.iter().min().unwrap();
    assert!(most_at_work <= 10, "a few minutes at work: {most_at_work}");
    assert!(
        least_personal > most_at_work && *personal.iter().max().unwrap() < 30,
        "more minutes outside work, still occasional clips: {personal:?}"
    );
}

#[test]
fn an_approved_exception_opens_cloud_storage_for_its_client_only() {
    // SCC 6.1.8: "other than in approved circumstances"; the seeds' table: blocked sites
    // may be made available after a risk assessment and line-manager approval.
    let scratch = Scratch::new("policy-seeds-exception");
    let policy = shipped_policy_with_an_extremist_list(&scratch);
    let exceptions = scratch.0.join("exceptions.toml");
    std::fs::write(
        &exceptions,
        "[[exceptions]]\nclient = \"192.0.2.10\"\ncategories = [\"cloud-storage\"]\n\
         approved_by = \"A. Manager\"\nreference = \"RITM1\"\n\
         reason = \"Receives evidence through Dropbox\"\nexpires = \"2027-03-31\"\n",
    )
    .unwrap();
    let monday = "2026-11-23T10:00:00Z";
    let approved = explain(&policy, &exceptions, STAFF, "www.dropbox.com", monday);
    assert_eq!(approved["action"], "allow", "{approved}");
    let other = explain(
        &policy,
        &exceptions,
        "192.0.2.11",
        "www.dropbox.com",
        monday,
    );
    assert_eq!(other["action"], "block", "{other}");
}
