use std::path::Path;

use classifier_common::{classify::app, config::quic_mode, policy::verdict};

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("test.toml"), Path::new("."))
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The 1-based line where `marker` first appears in `text`: where an error about the field
/// written there must point.
fn line_of(text: &str, marker: &str) -> usize {
    let offset = text
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in {text:?}"));
    line_at(text, offset)
}

#[test]
fn default_policy_compiles_with_every_category() {
    let policy = Policy::default_council();
    let categories = &policy.classes.categories;
    for expected in [
        "streaming-video",
        "streaming-audio",
        "gaming",
        "gambling",
        "adult",
        "violence-weapons",
        "piracy",
        "extremist",
        "online-trading",
        "money-making",
        "cloud-storage",
        "file-sharing",
        "doh",
        "quic",
    ] {
        assert!(
            categories.iter().any(|c| c.name == expected),
            "{expected} missing"
        );
    }
    assert_eq!(
        policy.classes.report.collisions,
        Vec::<(String, String)>::new()
    );
    assert_eq!(policy.datapath.config.quic_mode, quic_mode::CLASSIFY);
    assert_eq!(policy.datapath.config.peer_ttl_secs, 600);
}

#[test]
fn longest_listed_suffix_wins() {
    let policy = Policy::default_council();
    let classes = &policy.classes;
    let class_of = |name: &str| {
        classes
            .lookup(name)
            .map(|e| (classes.category_name(e.category), classes.app_name(e.app)))
    };
    assert_eq!(
        class_of("rr3---sn-aigl6nzr.googlevideo.com"),
        Some(("streaming-video", "youtube"))
    );
    assert_eq!(
        class_of("music.youtube.com"),
        Some(("streaming-audio", "youtube-music"))
    );
    assert_eq!(
        class_of("WWW.YouTube.COM."),
        Some(("streaming-video", "youtube"))
    );
    assert_eq!(class_of("www.bbc.co.uk"), None, "news stays uncategorised");
    assert_eq!(
        class_of("notyoutube.com"),
        None,
        "suffixes start at a label"
    );
    assert_eq!(class_of("dns.google"), Some(("doh", "unknown")));
    assert_eq!(
        classes.protocol_categories[app::BITTORRENT as usize],
        classes.category_id("file-sharing").unwrap()
    );
}

#[test]
fn errors_name_file_line_and_field() {
    let cases = [
        (
            "[categories.video]\ndomains = [\"ok.example\", \"not a domain\"]\n",
            "\"not a domain\"",
            "categories.video.domains[1]",
            "not a domain name",
        ),
        (
            "[categories.video]\n[apps.yt]\ncategory = \"vidoe\"\n",
            "\"vidoe\"",
            "apps.yt.category",
            "no category `vidoe`",
        ),
        (
            "[categories.video]\nports = [\"tcp/99999\"]\n",
            "\"tcp/99999\"",
            "categories.video.ports[0]",
            "tcp/PORT",
        ),
        (
            "[categories.video]\ndomians = []\n",
            "domians",
            "categories.video.domians",
            "unknown field `domians`",
        ),
        (
            "[site]\ntimezone = \"Europe/Londn\"\n",
            "\"Europe/Londn\"",
            "site.timezone",
            "unknown time zone",
        ),
        (
            "[categories.p2p]\nprotocols = [\"edonkey\"]\n",
            "\"edonkey\"",
            "categories.p2p.protocols[0]",
            "unknown protocol",
        ),
        (
            "[quic]\nmode = \"sometimes\"\n",
            "\"sometimes\"",
            "quic.mode",
            "classify",
        ),
        (
            "[bittorrent]\npeer_ttl = \"soon\"\n",
            "\"soon\"",
            "bittorrent.peer_ttl",
            "`5min`",
        ),
        (
            "[categories.video]\nlists = [\"/nonexistent/ut1/video\"]\n",
            "\"/nonexistent/ut1/video\"",
            "categories.video.lists[0]",
            "cannot read /nonexistent/ut1/video",
        ),
        ("[categories.video\n", "[categories.video", "(file)", ""),
    ];
    // Each case: the text, where in it the offending field is written, the field, the message.
    for (text, marker, field, message) in cases {
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        let line = line_of(text, marker);
        assert_eq!(err.line, line, "the line of `{marker}`: {shown}");
        assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
        assert_eq!(err.field, field, "{shown}");
        assert!(shown.contains(message), "{shown}");
        assert_eq!(shown.lines().count(), 1, "one line: {shown}");
    }
}

#[test]
fn ut1_list_directories_are_read_and_bad_lines_counted() {
    let dir = std::env::temp_dir().join(format!("classifier-ut1-{}", std::process::id()));
    let gambling = dir.join("gambling");
    std::fs::create_dir_all(&gambling).unwrap();
    std::fs::write(
        gambling.join("domains"),
        "# UT1 gambling\nbet-example.com\n\nCasino-Example.org.\n192.0.2.7\nhttp://bad/\n",
    )
    .unwrap();
    let text = "[categories.gambling]\nlists = [\"gambling\"]\ndomains = [\"bet-example.com\"]\n";
    let policy = Policy::parse(text, Path::new("p.toml"), &dir).unwrap();
    let report = &policy.classes.report;
    assert_eq!(report.domains_read, 3);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.list_lines_skipped, 2);
    assert!(policy.classes.lookup("www.casino-example.org").is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

mod decisions {
    use std::net::IpAddr;

    use jiff::Timestamp;

    use super::*;
    use crate::policy::{Action, decide::Reason};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn decide(policy: &Policy, client: &str, category: &str, period: &str, when: &str) -> Decision {
        let client: IpAddr = client.parse().unwrap();
        let category = policy.classes.category_id(category).unwrap();
        policy.decide(client, None, category, period, at(when))
    }

    use crate::policy::decide::Decision;

    #[test]
    fn default_policy_follows_the_council_policies() {
        let policy = Policy::default_council();
        let now = "2026-11-23T10:00:00Z";
        let staff = "192.0.2.10";
        for forbidden in [
            "adult",
            "gambling",
            "gaming",
            "cloud-storage",
            "doh",
            "piracy",
            "extremist",
            "online-trading",
            "money-making",
            "file-sharing",
        ] {
            for period in ["working", "lunch", "outside"] {
                assert_eq!(
                    decide(&policy, staff, forbidden, period, now).action,
                    Action::Block,
                    "{forbidden} in {period}"
                );
            }
        }
        for period in ["working", "lunch", "outside"] {
            let clips = decide(&policy, staff, "streaming-video", period, now);
            let Action::Shape(shaping) = &clips.action else {
                panic!("{clips:?}")
            };
            assert!(shaping.per_client && shaping.allowance.is_some());
            assert!(
                shaping.time_allowance.is_some(),
                "{period}: minutes of clips"
            );
            assert!(
                shaping.rate_bps <= 64_000,
                "{period}: too slow for continual audio"
            );
        }
        assert_eq!(
            decide(&policy, staff, "quic", "working", now).action,
            Action::Block
        );
        assert_eq!(
            decide(&policy, staff, "quic", "lunch", now).action,
            Action::Allow
        );
        let clips = decide(&policy, staff, "streaming-video", "working", now);
        assert_eq!(
            clips.reason,
            Reason::Rule {
                rule: 10,
                description: policy.rules[9].description.clone()
            }
        );
        assert_eq!(
            policy
                .groups
                .name(decide(&policy, "192.0.2.200", "quic", "working", now).group),
            "guest-wifi"
        );
        assert_eq!(
            policy
                .groups
                .name(decide(&policy, "192.0.2.5", "quic", "working", now).group),
            "ict"
        );
        assert_eq!(
            policy.groups.name(
                policy
                    .groups
                    .group_of("198.51.100.7".parse().unwrap(), None)
            ),
            "default"
        );
        assert_eq!(
            policy.groups.name(
                policy
                    .groups
                    .group_of("203.0.113.9".parse().unwrap(), Some(30))
            ),
            "guest-wifi"
        );
    }

    #[test]
    fn exceptions_apply_until_they_expire_and_clients_before_groups() {
        let text = format!(
            "{}\n[[exceptions]]\nclient = \"192.0.2.42\"\ncategories = [\"cloud-storage\"]\napproved_by = \"A. Manager\"\nreference = \"RITM1\"\nreason = \"Dropbox evidence\"\nexpires = \"2027-03-31\"\n\n[[exceptions]]\ngroup = \"ict\"\ncategories = [\"gaming\"]\napproved_by = \"Head of ICT\"\nreference = \"RITM2\"\nreason = \"Testing\"\nexpires = \"2027-01-01T00:00:00Z\"\n",
            DEFAULT_POLICY
        );
        let policy = Policy::parse(&text, Path::new("p.toml"), Path::new(".")).unwrap();
        let before = "2027-03-31T22:59:59Z"; // 23:59:59 BST on the last day
        let after = "2027-03-31T23:00:00Z";
        let allowed = decide(&policy, "192.0.2.42", "cloud-storage", "working", before);
        assert_eq!(allowed.action, Action::Allow);
        assert!(
            matches!(allowed.reason, Reason::ClientException { ref reference, .. } if reference == "RITM1")
        );
        assert_eq!(
            decide(&policy, "192.0.2.42", "cloud-storage", "working", after).action,
            Action::Block
        );
        assert_eq!(
            decide(&policy, "192.0.2.43", "cloud-storage", "working", before).action,
            Action::Block
        );
        assert!(matches!(
            decide(
                &policy,
                "192.0.2.5",
                "gaming",
                "working",
                "2026-12-31T12:00:00Z"
            )
            .reason,
            Reason::GroupException { .. }
        ));
        assert_eq!(
            decide(
                &policy,
                "192.0.2.5",
                "gaming",
                "working",
                "2027-01-01T00:00:00Z"
            )
            .action,
            Action::Block
        );
        assert_eq!(
            policy.next_expiry(at("2026-12-01T00:00:00Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );

        let tables = policy.decision_tables("working", at(before));
        assert!(tables.client_exceptions.contains(&(
            "192.0.2.42".parse().unwrap(),
            policy.classes.category_id("cloud-storage").unwrap()
        )));
        assert!(
            policy
                .decision_tables("working", at(after))
                .client_exceptions
                .is_empty()
        );
    }

    #[test]
    fn rules_and_exceptions_errors_are_located() {
        let cases = [
            (
                "[[rules]]\ncategories = \"gamblng\"\naction = \"block\"\n",
                "\"gamblng\"",
                "rules[0].categories",
                "no category `gamblng`",
            ),
            (
                "[categories.x]\n[[rules]]\ncategories = \"x\"\nperiods = [\"lunchtime\"]\naction = \"block\"\n",
                "\"lunchtime\"",
                "rules[0].periods[0]",
                "no period `lunchtime`",
            ),
            (
                "[[rules]]\naction = \"shape\"\n",
                "\"shape\"",
                "rules[0].action",
                "needs a `rate`",
            ),
            (
                "[[rules]]\naction = \"shape\"\nrate = \"2mbps\"\n",
                "\"2mbps\"",
                "rules[0].rate",
                "bytes per second",
            ),
            (
                "[[rules]]\naction = \"block\"\nrate = \"2mbit\"\n",
                "\"2mbit\"",
                "rules[0].rate",
                "only goes with",
            ),
            (
                "[[rules]]\naction = \"allow\"\ntime_allowance = \"5 minutes/hour\"\n",
                "\"5 minutes/hour\"",
                "rules[0].time_allowance",
                "only goes with action = \"shape\" or \"block\"",
            ),
            (
                "[[rules]]\naction = \"shape\"\nrate = \"1mbit\"\ntime_allowance = \"5m/hour\"\n",
                "\"5m/hour\"",
                "rules[0].time_allowance",
                "units written out",
            ),
            (
                "[[rules]]\naction = \"block\"\nshare = \"per-client\"\n",
                "\"per-client\"",
                "rules[0].share",
                "only when it has an allowance",
            ),
            (
                "[[rules]]\naction = \"block\"\ntime_allowance = \"5 minutes/day\"\nfail_fast = true\n",
                "true",
                "rules[0].fail_fast",
                "leave `fail_fast` out",
            ),
            (
                "[[rules]]\naction = \"deny\"\n",
                "\"deny\"",
                "rules[0].action",
                "choose `allow`, `block` or `shape`",
            ),
            (
                "[groups.a]\nprefixes = [\"192.0.2.1/24\"]\n",
                "\"192.0.2.1/24\"",
                "groups.a.prefixes[0]",
                "host bits",
            ),
            (
                "[groups.a]\nvlans = [5000]\n",
                "5000",
                "groups.a.vlans[0]",
                "1 to 4094",
            ),
            (
                "[groups.default]\n",
                "[groups.default]",
                "groups.default",
                "unmatched clients",
            ),
            (
                "[shaping]\nmethod = \"fast\"\n",
                "\"fast\"",
                "shaping.method",
                "choose `htb`",
            ),
            (
                "[categories.x]\n[[exceptions]]\nclient = \"192.0.2.1\"\ncategories = [\"x\"]\napproved_by = \"\"\nreference = \"R\"\nreason = \"r\"\nexpires = \"2027-01-01\"\n",
                "approved_by",
                "exceptions[0].approved_by",
                "approval on record",
            ),
            (
                "[categories.x]\n[[exceptions]]\nclient = \"192.0.2.1\"\ncategories = [\"x\"]\napproved_by = \"a\"\nreference = \"R\"\nreason = \"r\"\nexpires = \"soon\"\n",
                "\"soon\"",
                "exceptions[0].expires",
                "write a date",
            ),
        ];
        // Each case: the text, where in it the offending field is written, the field, the
        // message.
        for (text, marker, field, message) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(
                err.line,
                line_of(text, marker),
                "the line of `{marker}`: {err}"
            );
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(message), "{err}");
        }
    }
}

#[test]
fn shape_rules_become_the_datapath_s_shapers() {
    use classifier_common::shaping::shape_flags;
    let policy = parse(
        "[categories.video]\n[categories.files]\n\
         [[rules]]\ncategories = \"files\"\naction = \"block\"\n\
         [[rules]]\ncategories = \"video\"\naction = \"shape\"\nrate = \"2mbit\"\n\
         share = \"per-client\"\nallowance = \"36MB/hour\"\n\
         [shaping]\nmethod = \"policer\"\n",
    )
    .unwrap();
    let shapers = policy.shapers();
    assert_eq!(shapers.len(), 1);
    let (class, rule) = shapers[0];
    assert_eq!(class, 2, "the class is the rule's position, from 1");
    assert_eq!(rule.rate_bytes, 250_000);
    assert_eq!(rule.allowance_bytes, 36_000_000);
    assert_eq!(rule.allowance_refill, 10_000, "36 MB an hour: 10 kB/s");
    assert_eq!(
        rule.flags,
        shape_flags::PER_CLIENT | shape_flags::POLICER | shape_flags::ALLOWANCE
    );
    assert!(
        rule.burst_bytes >= 2 * 65_536,
        "the policer passes a GSO packet"
    );
}

#[test]
fn time_allowances_become_the_datapath_s_minutes() {
    use classifier_common::shaping::shape_flags;
    let policy = parse(
        "[categories.video]\n[categories.radio]\n\
         [[rules]]\ncategories = \"video\"\naction = \"shape\"\nrate = \"16kbit\"\n\
         share = \"per-client\"\ntime_allowance = \"5 minutes/hour\"\nallowance = \"50MB/hour\"\n\
         [[rules]]\ncategories = \"radio\"\naction = \"block\"\n\
         time_allowance = \"30 minutes/day\"\n",
    )
    .unwrap();
    let shapers = policy.shapers();
    assert_eq!(
        shapers.len(),
        2,
        "a block with an allowance is shaped first"
    );
    let (_, clips) = shapers[0];
    assert_eq!(
        (clips.allowance_minutes, clips.allowance_window_minutes),
        (5, 60)
    );
    assert_eq!(
        clips.flags,
        shape_flags::PER_CLIENT | shape_flags::ALLOWANCE | shape_flags::TIME_ALLOWANCE
    );
    let (class, radio) = shapers[1];
    assert_eq!(class, 2);
    assert_eq!(
        (radio.allowance_minutes, radio.allowance_window_minutes),
        (30, 1440)
    );
    assert_eq!(
        radio.flags,
        shape_flags::TIME_ALLOWANCE | shape_flags::BLOCK_WHEN_SPENT,
        "shared minutes, then dropped"
    );
    assert_eq!(radio.rate_bytes, 0);
    assert!(radio.is_set());
    let tables = policy.decision_tables("working", jiff::Timestamp::now());
    let radio_id = policy.classes.category_id("radio").unwrap();
    let (_, entry) = tables
        .actions
        .iter()
        .find(|((_, category), _)| *category == radio_id)
        .unwrap();
    assert_eq!(
        (entry.verdict, entry.shape_class),
        (verdict::SHAPE, 2),
        "the block waits for the allowance in the shaping step"
    );
    assert_eq!(
        policy.rules[1].action.to_string(),
        "block after 30 minutes/day shared at full speed"
    );
}

#[test]
fn a_shape_rule_beyond_the_datapath_s_classes_is_refused() {
    let mut text = String::from("[categories.video]\n");
    for _ in 0..255 {
        text += "[[rules]]\ncategories = \"video\"\naction = \"allow\"\n";
    }
    text += "[[rules]]\ncategories = \"video\"\naction = \"shape\"\nrate = \"1mbit\"\n";
    let err = parse(&text).unwrap_err();
    let (last_rule, _) = text.match_indices("[[rules]]").nth(255).unwrap();
    assert_eq!(
        err.line,
        line_at(&text, last_rule),
        "the 256th rule's line: {err}"
    );
    assert_eq!(err.field, "rules[255]", "{err}");
    assert!(err.message.contains("first 255 rules"), "{err}");
}

mod explain {
    use std::net::IpAddr;

    use super::*;
    use crate::policy::show::{Summary, parse_target};

    fn explain(client: &str, target: &str, when: &str) -> crate::policy::show::Explanation {
        let policy = Policy::default_council();
        let client: IpAddr = client.parse().unwrap();
        policy.explain(
            client,
            &parse_target(target).unwrap(),
            when.parse().unwrap(),
        )
    }

    #[test]
    fn unreadable_flows_are_explained_as_the_policy_judges_them() {
        let at_work = explain("192.0.2.10", "unreadable", "2026-11-23T10:00:00Z");
        assert_eq!(at_work.category, "unreadable");
        assert_eq!(at_work.action, "block", "{}", at_work.render());
        assert!(at_work.category_reason.contains("cannot be read"));
        let evening = explain("192.0.2.10", "protocol/unreadable", "2026-11-23T19:00:00Z");
        assert_eq!(evening.action, "allow", "{}", evening.render());
        let quic = explain("192.0.2.10", "protocol/quic", "2026-11-23T10:00:00Z");
        assert_eq!(
            (quic.category.as_str(), quic.action.as_str()),
            ("quic", "block")
        );
        assert!(crate::policy::show::parse_target("protocol/ssh").is_err());
    }

    #[test]
    fn the_schedule_decides_which_rule_applies() {
        // Monday 23 November 2026 (GMT): working hours, lunch, evening; Saturday.
        let working = explain("192.0.2.10", "www.youtube.com", "2026-11-23T10:00:00Z");
        assert_eq!(
            (working.group.as_str(), working.category.as_str()),
            ("staff", "streaming-video")
        );
        assert_eq!(working.period, "working");
        assert_eq!(
            working.action,
            "shape 16kbit per client after 5 minutes/hour and 50 MB per 1h at full speed per \
             client"
        );
        assert!(working.render().contains("rule 10"), "{}", working.render());
        let left = working.allowance.as_ref().expect("the rule's allowances");
        assert_eq!((left.minutes_left, left.measured), (Some(5), false));
        assert!(
            working.render().contains("5 of 5 minutes left"),
            "{}",
            working.render()
        );

        let lunch = explain("192.0.2.10", "www.youtube.com", "2026-11-23T12:30:00Z");
        assert_eq!(lunch.period, "lunch");
        assert!(
            lunch.period_reason.contains("12:00-13:00"),
            "{}",
            lunch.period_reason
        );
        assert!(
            lunch
                .action
                .starts_with("shape 16kbit per client after 15 minutes/hour"),
            "{}",
            lunch.action
        );

        let saturday = explain("192.0.2.10", "www.youtube.com", "2026-11-28T10:00:00Z");
        assert_eq!(saturday.period, "outside");
    }

    #[test]
    fn forbidden_categories_ports_and_unlisted_names() {
        let gambling = explain("192.0.2.200", "www.bet365.com", "2026-11-28T10:00:00Z");
        assert_eq!(gambling.group, "guest-wifi");
        assert_eq!(gambling.action, "block");
        let torrent = explain("192.0.2.10", "tcp/6881", "2026-11-23T10:00:00Z");
        assert_eq!(torrent.category, "file-sharing");
        assert_eq!(torrent.action, "block");
        let unlisted = explain(
            "192.0.2.10",
            "intranet.example.gov.uk",
            "2026-11-23T10:00:00Z",
        );
        assert_eq!(unlisted.category, "uncategorized");
        assert_eq!(unlisted.action, "allow");
        assert!(unlisted.category_reason.contains("no listed domain"));
        assert!(parse_target("192.0.2.1").is_err());
        assert!(parse_target("tcp/99999").is_err());
    }

    #[test]
    fn show_lists_rules_in_order_with_their_actions() {
        let summary = Summary::of(&Policy::default_council(), Some("working"));
        assert_eq!(summary.periods, ["lunch", "working", "outside"]);
        assert_eq!(summary.rules[0].number, 1);
        assert_eq!(summary.rules[0].action, "block");
        let text = summary.render();
        assert!(text.contains("in force: working"), "{text}");
        assert!(text.contains("streaming-video"), "{text}");
    }

    #[test]
    fn rules_may_name_only_the_schedule_s_periods() {
        // `periods` as a list, then as one name (as the built-in policy writes it).
        for periods in ["[\"open\", \"working\"]", "\"working\""] {
            let text = format!(
                "[schedule]\ndefault = \"open\"\n[categories.x]\n[[rules]]\ncategories = \"x\"\nperiods = {periods}\naction = \"block\"\n"
            );
            let err = parse(&text).unwrap_err();
            let field = if periods.starts_with('[') {
                "rules[0].periods[1]"
            } else {
                "rules[0].periods"
            };
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains("open"), "{err}");
            assert_eq!(err.line, line_of(&text, "\"working\""), "{err}");
        }
    }

    #[test]
    fn a_period_written_as_one_name_is_located_on_its_line() {
        let text = "[schedule]\ndefault = \"open\"\n[categories.x]\n[[rules]]\ncategories = \"x\"\nperiods = \"working\"\naction = \"block\"\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.field, "rules[0].periods", "{err}");
        assert_eq!(err.line, line_of(text, "\"working\""), "{err}");
    }
}

#[test]
fn fail_fast_is_a_block_rule_setting_and_defaults_to_on() {
    let text = |rule: &str| {
        format!(
            "[categories.gambling]\ndomains = [\"bet.example.test\"]\n[[rules]]\ncategories = \"gambling\"\n{rule}"
        )
    };
    let policy = |rule: &str| Policy::parse(&text(rule), Path::new("p.toml"), Path::new("."));
    assert!(policy("action = \"block\"").unwrap().rules[0].fail_fast);
    assert!(
        !policy("action = \"block\"\nfail_fast = false")
            .unwrap()
            .rules[0]
            .fail_fast
    );
    let allow_rule = "action = \"allow\"\nfail_fast = false";
    let err = policy(allow_rule).unwrap_err();
    let line = line_of(&text(allow_rule), "fail_fast = false");
    assert_eq!(err.line, line, "{err}");
    assert_eq!(err.field, "rules[0].fail_fast", "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("p.toml:{line}:")) && shown.contains("only a `block` rule"),
        "{shown}"
    );
}

#[test]
fn categories_keep_file_order_and_their_ids_across_policies() {
    let first = parse("[categories.video]\n[categories.gaming]\n").unwrap();
    let names: Vec<(&str, u16)> = first
        .classes
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.id))
        .collect();
    assert_eq!(
        names,
        [("video", 1), ("gaming", 2)],
        "file order, not sorted"
    );

    // Video removed, a new category first: gaming keeps 2, the new one gets 3 (not 1).
    let second = Policy::parse_with_ids(
        "[categories.news]\n[categories.gaming]\n\
         [groups.guest]\nprefixes = [\"10.0.0.0/8\"]\n\
         [[rules]]\ngroups = \"guest\"\naction = \"block\"\n",
        Path::new("test.toml"),
        Path::new("."),
        &first.classes.ids,
    )
    .unwrap();
    let classes = &second.classes;
    assert_eq!(classes.category_id("gaming"), Some(2));
    assert_eq!(classes.category_id("news"), Some(3));
    assert_eq!(
        classes.category_name(1),
        "video",
        "a flow of video keeps its name"
    );
    assert_eq!(classes.removed_category_ids(), [1]);

    // A running video flow is now uncategorized to the rules: the guest group's
    // catch-all block covers it as it covers category 0.
    let tables = second.decision_tables("working", "2026-12-03T10:00:00Z".parse().unwrap());
    let guest = second.groups.id("guest").unwrap();
    let blocked: Vec<u16> = tables
        .actions
        .iter()
        .filter(|((group, _), entry)| *group == guest && entry.verdict == verdict::BLOCK)
        .map(|((_, category), _)| *category)
        .collect();
    assert_eq!(
        blocked,
        [0, 3, 2, 1],
        "file order (news, gaming), then the removed video"
    );
}

/// `[records]` retention: units that cannot be misread, the councils' 14 months as the
/// limit, and an override that must say why.
mod retention {
    use super::*;

    /// `[records]` holding `body`, after a line that is not the field.
    fn records(body: &str) -> String {
        format!("[site]\nname = \"Test\"\n\n[records]\nidle_timeout = \"5 minutes\"\n{body}\n")
    }

    fn refused(body: &str, marker: &str, field: &str, says: &[&str]) {
        let text = records(body);
        let err = parse(&text).expect_err(&text);
        let shown = err.to_string();
        let line = line_of(&text, marker);
        assert_eq!(err.line, line, "the line of `{marker}`: {shown}");
        assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
        assert_eq!(err.field, field, "{shown}");
        for part in says {
            assert!(shown.contains(part), "`{part}` missing: {shown}");
        }
    }

    #[test]
    fn minutes_or_months_written_as_m_are_refused() {
        for written in ["14m", "14M", "1y 2m", "P14M"] {
            refused(
                &format!("retention = \"{written}\""),
                &format!("\"{written}\""),
                "records.retention",
                &["`14 months`", "`420 days`"],
            );
        }
        refused(
            "retention = \"14m\"",
            "\"14m\"",
            "records.retention",
            &["ambiguous (minutes or months?)"],
        );
        refused(
            "degradation_retention = \"3m\"",
            "\"3m\"",
            "records.degradation_retention",
            &["ambiguous"],
        );
    }

    #[test]
    fn spelled_out_units_are_what_they_say() {
        use jiff::ToSpan as _;
        let keep = |body: &str| parse(&records(body)).unwrap().records.retention.keep;
        assert_eq!(
            keep("retention = \"14 months\"").fieldwise(),
            14.months().fieldwise()
        );
        assert_eq!(
            keep("retention = \"420 days\"").fieldwise(),
            420.days().fieldwise()
        );
        let policy = parse(&records("retention = \"30 days\"")).unwrap();
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        assert_eq!(
            policy.records.retention.cutoff(now).unwrap(),
            "2026-11-03T12:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        // The default: the councils' 14 months for records, 90 days for degradation reports.
        let default = Policy::default_council().records;
        assert_eq!(default.retention.keep.fieldwise(), 14.months().fieldwise());
        assert_eq!(
            default.retention.degradation_keep.fieldwise(),
            90.days().fieldwise()
        );
        assert_eq!(default.retention_override_reason, None);
    }

    #[test]
    fn more_than_fourteen_months_is_refused_with_the_policy_s_reason() {
        for written in ["30 years", "15 months", "425 days", "1 year 3 months"] {
            refused(
                &format!("retention = \"{written}\""),
                &format!("\"{written}\""),
                "records.retention",
                &[
                    "more than 14 months",
                    "Personal data is retained for a maximum of 14 months",
                    "retention_override_reason",
                ],
            );
        }
        // Anonymised data may be kept longer: the degradation log (its clients gone at the
        // records' retention) is not limited.
        assert!(parse(&records("degradation_retention = \"3 years\"")).is_ok());
    }

    #[test]
    fn an_override_must_name_why_and_must_override_something() {
        let policy = parse(&records(
            "retention = \"2 years\"\nretention_override_reason = \"Audit Committee AC-2026-7: \
             records kept for the tribunal\"",
        ))
        .unwrap();
        assert_eq!(
            policy.records.retention_override_reason.as_deref(),
            Some("Audit Committee AC-2026-7: records kept for the tribunal")
        );
        refused(
            "retention = \"2 years\"\nretention_override_reason = \"  \"",
            "\"2 years\"",
            "records.retention",
            &["more than 14 months"],
        );
        refused(
            "retention = \"14 months\"\nretention_override_reason = \"just in case\"",
            "\"just in case\"",
            "records.retention_override_reason",
            &["nothing to override"],
        );
        refused(
            "retention = \"6 months\"\nretention_override_reason = \"\"",
            "\"\"",
            "records.retention_override_reason",
            &["nothing to override"],
        );
    }
}

#[test]
fn ipfix_export_defaults_to_no_enterprise_fields_and_a_30_minute_active_timeout() {
    let policy = parse("[export]\nipfix_collector = \"192.0.2.50:4739\"\n").unwrap();
    let ipfix = policy.records.ipfix;
    assert_eq!(ipfix.collector, Some("192.0.2.50:4739".parse().unwrap()));
    assert_eq!(
        ipfix.enterprise, None,
        "nothing under any number by default"
    );
    assert_eq!(ipfix.active_timeout, std::time::Duration::from_secs(1800));

    let policy = parse(
        "[export]\nipfix_collector = \"192.0.2.50:4739\"\n\
         ipfix_enterprise_number = 64000\nipfix_active_timeout = \"5min\"\n",
    )
    .unwrap();
    assert_eq!(policy.records.ipfix.enterprise, Some(64000));
    assert_eq!(
        policy.records.ipfix.active_timeout,
        std::time::Duration::from_secs(300)
    );

    for (text, field) in [
        (
            "[export]\nipfix_enterprise_number = 0\n",
            "export.ipfix_enterprise_number",
        ),
        (
            "[export]\nipfix_active_timeout = \"0s\"\n",
            "export.ipfix_active_timeout",
        ),
        (
            "[export]\nipfix_active_timeout = \"soon\"\n",
            "export.ipfix_active_timeout",
        ),
        (
            "[export]\nipfix_collector = \"collector\"\n",
            "export.ipfix_collector",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}
