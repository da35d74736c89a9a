//! The policy commands as a network team uses them, without a daemon: `policy check`,
//! `policy explain`, `policy show`, and an exception granted, seen, and ended with
//! `exceptions`; which policy they read (the site's /etc/classifier/policy.toml when it
//! exists) and say they read; a named exceptions file that does not exist is an error.
//!
//! Every command runs with a private /etc/classifier of the test's ([`SiteConfig`]), empty
//! unless the test writes the site's files there, so the machine's never changes an
//! answer and is never written.

use std::{path::Path, process::Output};

use classifier_tests::site_config::SiteConfig;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn explain_json(
    site: &SiteConfig,
    exceptions: &str,
    client: &str,
    target: &str,
    at: &str,
) -> serde_json::Value {
    let out = stdout(&site.classifier(&[
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
    let Some(scratch) = SiteConfig::new("exceptions") else {
        return;
    };
    let file = scratch.work_dir().join("exceptions.toml");
    let file = file.to_str().unwrap();
    let socket = scratch.work_dir().join("no-daemon.sock");
    let socket = socket.to_str().unwrap();
    // Monday 23 November 2026, 10:00 GMT: working hours.
    let monday = "2026-11-23T10:00:00Z";
    // Named with --exceptions, so it must exist: none granted yet.
    std::fs::write(file, "").unwrap();

    let blocked = explain_json(&scratch, file, "192.0.2.10", "www.dropbox.com", monday);
    assert_eq!(blocked["category"], "cloud-storage");
    assert_eq!(blocked["action"], "block");

    let added = stdout(&scratch.classifier(&[
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

    let allowed = explain_json(&scratch, file, "192.0.2.10", "www.dropbox.com", monday);
    assert_eq!(allowed["action"], "allow");
    assert_eq!(allowed["decided_by"]["kind"], "client-exception");
    assert_eq!(allowed["decided_by"]["reference"], "RITM0012345");
    // Another client is still blocked.
    assert_eq!(
        explain_json(&scratch, file, "192.0.2.11", "www.dropbox.com", monday)["action"],
        "block"
    );

    let listed =
        stdout(&scratch.classifier(&["exceptions", "list", "--json", "--exceptions", file]));
    let entry: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(entry["active"], true);
    assert_eq!(entry["approved_by"], "J. Smith (line manager)");

    stdout(&scratch.classifier(&[
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
        explain_json(&scratch, file, "192.0.2.10", "www.dropbox.com", &now)["action"],
        "block"
    );
    let listed =
        stdout(&scratch.classifier(&["exceptions", "list", "--json", "--exceptions", file]));
    let entry: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(entry["active"], false, "ended, still listed: {entry}");
}

#[test]
fn a_bad_exception_is_refused_and_the_file_is_unchanged() {
    let Some(scratch) = SiteConfig::new("bad-exception") else {
        return;
    };
    let file = scratch.work_dir().join("exceptions.toml");
    let file = file.to_str().unwrap();
    let refused = scratch.classifier(&[
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
    let Some(scratch) = SiteConfig::new("check") else {
        return;
    };
    let good = scratch.work_dir().join("good.toml");
    std::fs::write(&good, classifier_user::policy::DEFAULT_POLICY).unwrap();
    let out = stdout(&scratch.classifier(&["policy", "check", good.to_str().unwrap()]));
    assert!(out.contains("valid"), "{out}");

    let bad = scratch.work_dir().join("bad.toml");
    let text = classifier_user::policy::DEFAULT_POLICY
        .replace("hours = \"08:30-17:00\"", "hours = \"08:30-25:00\"");
    std::fs::write(&bad, &text).unwrap();
    let refused = scratch.classifier(&["policy", "check", bad.to_str().unwrap()]);
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

/// `policy check` on the built-in policy with its retention line replaced by `retention`:
/// whether it passed, and what it said.
fn check_retention(scratch: &SiteConfig, retention: &str) -> (bool, String) {
    let file = scratch.work_dir().join("retention.toml");
    let text = classifier_user::policy::DEFAULT_POLICY
        .replace("retention = \"14 months\"\n", &format!("{retention}\n"));
    assert_ne!(text, classifier_user::policy::DEFAULT_POLICY);
    std::fs::write(&file, &text).unwrap();
    let output = scratch.classifier(&["policy", "check", file.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn policy_check_refuses_a_retention_that_can_be_misread_or_is_too_long() {
    let Some(scratch) = SiteConfig::new("check-retention") else {
        return;
    };
    // `m`: minutes (jiff's reading, which deleted a year's records within the hour) or
    // months? Refused, with the forms that cannot be misread.
    let (ok, said) = check_retention(&scratch, "retention = \"14m\"");
    assert!(!ok, "{said}");
    assert!(
        said.contains("records.retention") && said.contains("ambiguous (minutes or months?)"),
        "{said}"
    );
    assert!(
        said.contains("`14 months`") && said.contains("`420 days`"),
        "{said}"
    );
    // Longer than the councils' 14 months: refused with the policy's reason...
    let (ok, said) = check_retention(&scratch, "retention = \"30 years\"");
    assert!(!ok, "{said}");
    assert!(
        said.contains("Personal data is retained for a maximum of 14 months")
            && said.contains("retention_override_reason"),
        "{said}"
    );
    // ...unless an override names why.
    let (ok, said) = check_retention(
        &scratch,
        "retention = \"2 years\"\nretention_override_reason = \"IG decision IG-2027-03 \
         (tribunal hold), J. Smith, SIRO\"",
    );
    assert!(ok, "{said}");
    // Spelled out, within the limit: valid.
    let (ok, said) = check_retention(&scratch, "retention = \"420 days\"");
    assert!(ok && said.contains("valid"), "{said}");
}

/// The built-in policy with one more category, `news` (uncategorised, so allowed, in the
/// built-in one), blocked in working hours.
fn with_news_blocked_at_work() -> String {
    format!(
        "{}\n[categories.news]\ndomains = [\"bbc.co.uk\"]\n\n[[rules]]\ndescription = \
         \"News: not at work\"\ncategories = \"news\"\nperiods = \"working\"\naction = \
         \"block\"\n",
        classifier_user::policy::DEFAULT_POLICY
    )
}

#[test]
fn explain_answers_for_a_candidate_policy_file_at_a_given_time() {
    let Some(scratch) = SiteConfig::new("explain-candidate") else {
        return;
    };
    let candidate = scratch.work_dir().join("candidate.toml");
    let text = with_news_blocked_at_work();
    std::fs::write(&candidate, &text).unwrap();
    let candidate = candidate.to_str().unwrap();
    let exceptions = scratch.work_dir().join("none.toml");
    std::fs::write(&exceptions, "").unwrap();
    let exceptions = exceptions.to_str().unwrap();
    // The new rule is the file's last.
    let rules = text.matches("[[rules]]").count();
    // Monday 23 November 2026 (GMT): working hours, then lunch.
    let (working, lunch) = ("2026-11-23T10:00:00Z", "2026-11-23T12:30:00Z");
    let explain = |policy: Option<&str>, at: &str, json: bool| {
        let mut args = vec!["policy", "explain", "192.0.2.10", "www.bbc.co.uk"];
        args.extend(["--at", at, "--exceptions", exceptions]);
        if let Some(policy) = policy {
            args.extend(["--policy", policy]);
        }
        if json {
            args.push("--json");
        }
        stdout(&scratch.classifier(&args))
    };
    let json = |policy: Option<&str>, at: &str| -> serde_json::Value {
        serde_json::from_str(&explain(policy, at, true)).unwrap()
    };

    // The built-in policy does not list the name: allowed, at work too.
    let built_in = json(None, working);
    assert_eq!(built_in["category"], "uncategorized", "{built_in:#}");
    assert_eq!(built_in["action"], "allow", "{built_in:#}");
    assert_eq!(built_in["decided_by"]["kind"], "default", "{built_in:#}");

    // The candidate file blocks it at work, by its new rule (the last one).
    let at_work = json(Some(candidate), working);
    assert_eq!(at_work["group"], "staff", "{at_work:#}");
    assert_eq!(at_work["category"], "news", "{at_work:#}");
    assert_eq!(at_work["period"], "working", "{at_work:#}");
    assert_eq!(at_work["action"], "block", "{at_work:#}");
    assert_eq!(
        at_work["decided_by"],
        serde_json::json!({"kind": "rule", "rule": rules, "description": "News: not at work"}),
        "rule {rules} of {rules}"
    );
    let text_at_work = explain(Some(candidate), working, false);
    assert!(
        text_at_work.contains("  category: news (`www.bbc.co.uk` is listed in news")
            && text_at_work.contains(&format!(
                "  decision: block (rule {rules}: News: not at work)\n"
            )),
        "{text_at_work}"
    );

    // --at: at lunch the rule does not apply.
    let at_lunch = json(Some(candidate), lunch);
    assert_eq!(at_lunch["category"], "news", "{at_lunch:#}");
    assert_eq!(at_lunch["period"], "lunch", "{at_lunch:#}");
    assert_eq!(at_lunch["action"], "allow", "{at_lunch:#}");
    assert_eq!(at_lunch["decided_by"]["kind"], "default", "{at_lunch:#}");
    assert!(
        explain(Some(candidate), lunch, false).contains("  decision: allow (no rule matches"),
        "text at lunch"
    );

    // A candidate that does not load is refused with its file and line, not answered for
    // with the built-in policy.
    let broken = scratch.work_dir().join("broken.toml");
    // The new (last) rule's action made unknown.
    let (head, last_rule) = text.split_at(text.rfind("[[rules]]").unwrap());
    let broken_text = format!(
        "{head}{}",
        last_rule.replace("action = \"block\"", "action = \"forbid\"")
    );
    assert_ne!(broken_text, text);
    std::fs::write(&broken, &broken_text).unwrap();
    let refused = scratch.classifier(&[
        "policy",
        "explain",
        "192.0.2.10",
        "www.bbc.co.uk",
        "--policy",
        broken.to_str().unwrap(),
        "--exceptions",
        exceptions,
    ]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    let line = broken_text
        .lines()
        .position(|l| l.contains("forbid"))
        .unwrap()
        + 1;
    assert!(
        message.contains(&format!("broken.toml:{line}:"))
            && message.contains(&format!("rules[{}].action", rules - 1)),
        "{message}"
    );
}

#[test]
fn show_reads_a_policy_file_without_a_daemon() {
    let Some(scratch) = SiteConfig::new("show-file") else {
        return;
    };
    let candidate = scratch.work_dir().join("candidate.toml");
    std::fs::write(&candidate, with_news_blocked_at_work()).unwrap();
    let candidate = candidate.to_str().unwrap();
    let no_daemon = scratch.work_dir().join("no-daemon.sock");
    let args = |json: bool| {
        let mut args = vec!["policy", "show", "--policy", candidate];
        args.extend(["--control-socket", no_daemon.to_str().unwrap()]);
        if json {
            args.push("--json");
        }
        stdout(&scratch.classifier(&args))
    };

    let shown: serde_json::Value = serde_json::from_str(&args(true)).unwrap();
    assert_eq!(shown["policy"], candidate, "{shown:#}");
    assert_eq!(
        shown["period_in_force"],
        serde_json::Value::Null,
        "no daemon asked"
    );
    let categories = shown["categories"].as_array().unwrap();
    let built_in = classifier_user::policy::Policy::default_council();
    assert_eq!(categories.len(), built_in.classes.categories.len() + 1);
    assert_eq!(
        categories.last().unwrap(),
        &serde_json::json!({"name": "news", "domains": 1}),
        "the file's own category, last as in the file"
    );
    let rules = shown["rules"].as_array().unwrap();
    assert_eq!(rules.len(), built_in.rules.len() + 1);
    assert_eq!(
        rules.last().unwrap(),
        &serde_json::json!({
            "number": rules.len(),
            "description": "News: not at work",
            "action": "block",
            "categories": ["news"],
            "groups": null,
            "periods": ["working"],
        })
    );

    let text = args(false);
    assert!(
        text.starts_with(&format!("policy:   {candidate} (")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("news ") && l.ends_with(" 1 domains")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l
            .trim_start()
            .starts_with(&format!("{}. News: not at work ", rules.len()))
            && l.ends_with("→ block")),
        "{text}"
    );
    assert!(!text.contains("in force:"), "no daemon asked: {text}");

    // Without --policy, show asks the daemon; with none running, it shows the built-in
    // policy (there is no site file) and says so.
    let built_in = scratch.classifier(&[
        "policy",
        "show",
        "--control-socket",
        no_daemon.to_str().unwrap(),
    ]);
    let text = stdout(&built_in);
    assert!(
        text.starts_with(&format!(
            "policy:   {} (",
            classifier_user::policy::DEFAULT_POLICY_NAME
        )),
        "{text}"
    );
    assert!(
        stderr(&built_in).contains("no daemon answers")
            && stderr(&built_in).contains("the built-in council policy"),
        "{}",
        stderr(&built_in)
    );
}

/// The built-in policy with a group of its own (not in the built-in one).
fn with_planning_group() -> String {
    format!(
        "{}\n[groups.planning]\ndescription = \"Planning officers\"\nprefixes = \
         [\"198.51.100.0/24\"]\n",
        classifier_user::policy::DEFAULT_POLICY
    )
}

#[test]
fn without_a_daemon_the_site_policy_is_read_and_named() {
    let Some(site) = SiteConfig::new("site-policy") else {
        return;
    };
    let machine_had_one = Path::new("/etc/classifier").exists();
    // What the commands see as /etc/classifier/policy.toml.
    let site_file = site.etc_classifier().join("policy.toml");
    std::fs::write(&site_file, with_planning_group()).unwrap();
    let site_policy = classifier_user::policy::SITE_POLICY_FILE;
    let no_daemon = site.work_dir().join("no-daemon.sock");
    let no_daemon = no_daemon.to_str().unwrap();
    let monday = "2026-11-23T10:00:00Z";

    // An exception for a group only the site's file has: checked against that file, and
    // kept in the site's default exceptions file.
    let added = site.classifier(&[
        "exceptions",
        "add",
        "--group",
        "planning",
        "--category",
        "cloud-storage",
        "--approved-by",
        "C. Head of Planning",
        "--reference",
        "RITM0020001",
        "--reason",
        "Large drawings from architects",
        "--expires",
        "2099-12-31",
        "--control-socket",
        no_daemon,
    ]);
    assert!(stdout(&added).contains("RITM0020001"));
    assert!(
        stderr(&added).contains(&format!("the site's policy {site_policy}")),
        "{}",
        stderr(&added)
    );
    assert!(site.etc_classifier().join("exceptions.toml").exists());

    // explain: the site's policy (its group, the exception), said on stderr and in the answer.
    let explained = site.classifier(&[
        "policy",
        "explain",
        "198.51.100.7",
        "www.dropbox.com",
        "--at",
        monday,
        "--control-socket",
        no_daemon,
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_str(&stdout(&explained)).unwrap();
    assert_eq!(answer["policy"], site_policy, "{answer:#}");
    assert_eq!(answer["group"], "planning", "{answer:#}");
    assert_eq!(answer["action"], "allow", "{answer:#}");
    assert_eq!(
        answer["decided_by"]["kind"], "group-exception",
        "{answer:#}"
    );
    assert!(
        stderr(&explained).contains(&format!("this is the site's policy {site_policy}")),
        "{}",
        stderr(&explained)
    );
    let text = stdout(&site.classifier(&[
        "policy",
        "explain",
        "198.51.100.7",
        "www.dropbox.com",
        "--control-socket",
        no_daemon,
    ]));
    assert!(
        text.contains(&format!("  policy:   {site_policy}\n")),
        "{text}"
    );

    // show and list: the same policy and exception.
    let shown = site.classifier(&["policy", "show", "--json", "--control-socket", no_daemon]);
    let summary: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(summary["policy"], site_policy);
    assert!(
        summary["groups"]
            .as_array()
            .unwrap()
            .contains(&"planning".into())
    );
    assert_eq!(summary["exceptions"][0]["reference"], "RITM0020001");
    assert!(
        stderr(&shown).contains("the site's policy"),
        "{}",
        stderr(&shown)
    );
    let listed = site.classifier(&["exceptions", "list", "--json"]);
    assert!(stdout(&listed).contains("RITM0020001"));
    assert!(stderr(&listed).contains("the site's policy"));

    // Without the site's file the built-in policy answers, says so, and does not know the
    // group: the exception is refused, naming it.
    std::fs::remove_file(&site_file).unwrap();
    let listed = site.classifier(&["exceptions", "list"]);
    assert!(!listed.status.success());
    assert!(stderr(&listed).contains("the built-in council policy"));
    assert!(stderr(&listed).contains("planning"), "{}", stderr(&listed));
    assert_eq!(
        Path::new("/etc/classifier").exists(),
        machine_had_one,
        "the machine's /etc is untouched"
    );
}

#[test]
fn a_named_exceptions_file_that_does_not_exist_is_an_error() {
    let Some(scratch) = SiteConfig::new("missing-exceptions") else {
        return;
    };
    let missing = scratch.work_dir().join("exeptions.toml");
    let missing = missing.to_str().unwrap();
    let no_daemon = scratch.work_dir().join("no-daemon.sock");
    let no_daemon = no_daemon.to_str().unwrap();
    for args in [
        &[
            "policy",
            "explain",
            "192.0.2.10",
            "www.dropbox.com",
            "--exceptions",
            missing,
            "--control-socket",
            no_daemon,
        ][..],
        &[
            "policy",
            "show",
            "--exceptions",
            missing,
            "--control-socket",
            no_daemon,
        ],
        &["exceptions", "list", "--exceptions", missing],
        &[
            "exceptions",
            "expire",
            "RITM0012345",
            "--exceptions",
            missing,
            "--control-socket",
            no_daemon,
        ],
    ] {
        let output = scratch.classifier(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let message = stderr(&output);
        assert!(
            message.contains(missing) && message.contains("does not exist"),
            "{args:?}: {message}"
        );
    }
    // The default file may be missing: no exceptions.
    let output = scratch.classifier(&[
        "policy",
        "explain",
        "192.0.2.10",
        "www.dropbox.com",
        "--control-socket",
        no_daemon,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!Path::new(missing).exists(), "nothing made");
}

/// `policy check` of `text` written to `name` in `scratch`, with `args` after the file:
/// whether it passed, its standard output and its standard error.
fn check_file(
    scratch: &SiteConfig,
    name: &str,
    text: &str,
    args: &[&str],
) -> (bool, String, String) {
    let file = scratch.work_dir().join(name);
    std::fs::write(&file, text).unwrap();
    let mut all = vec!["policy", "check", file.to_str().unwrap()];
    all.extend(args);
    let output = scratch.classifier(&all);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The 1-based line of the first line of `text` that contains `marker`.
fn line_with(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}`"))
        + 1
}

/// Monday 23 November 2026: the shipped policy's bank holidays reach into next year.
const AT_2026: &str = "2026-11-23T10:00:00Z";

#[test]
fn policy_check_warns_about_lunch_after_working_and_strict_refuses_it() {
    let Some(scratch) = SiteConfig::new("check-warn") else {
        return;
    };
    let lunch =
        "[[schedule.period]]\nname = \"lunch\"\ndays = \"weekdays\"\nhours = \"12:00-13:00\"\n\n";
    let default = classifier_user::policy::DEFAULT_POLICY;
    assert!(default.contains(lunch));
    // Lunch moved after working hours: it would never be in force, silently.
    let text = default.replacen(lunch, "", 1).replacen(
        "# Shorter days, e.g.:",
        &format!("\n{lunch}# Shorter days, e.g.:"),
        1,
    );
    let line = line_with(&text, "name = \"lunch\"");
    let (ok, out, err) = check_file(&scratch, "lunch.toml", &text, &["--at", AT_2026]);
    assert!(ok, "a warning is not an error: {err}");
    assert!(out.contains("valid"), "{out}");
    assert!(
        err.contains(&format!(
            "warning: {}",
            scratch.work_dir().join("lunch.toml").display()
        )) && err.contains(&format!("lunch.toml:{line}:"))
            && err.contains("schedule.period[1].name")
            && err.contains("`lunch` can never be in force"),
        "{err}"
    );
    let (ok, _, err) = check_file(
        &scratch,
        "lunch.toml",
        &text,
        &["--at", AT_2026, "--strict"],
    );
    assert!(!ok, "--strict refuses warnings");
    assert!(err.contains("refused (--strict): 1 warning"), "{err}");
    // The shipped policy itself: nothing to warn about, also with --strict.
    let (ok, _, err) = check_file(
        &scratch,
        "default.toml",
        default,
        &["--at", AT_2026, "--strict"],
    );
    assert!(ok && !err.contains("warning"), "{err}");
}

#[test]
fn policy_check_refuses_a_public_suffix_in_a_list_file_naming_the_list_and_line() {
    let Some(scratch) = SiteConfig::new("check-suffix") else {
        return;
    };
    std::fs::create_dir_all(scratch.work_dir().join("ut1/gambling")).unwrap();
    let list = scratch.work_dir().join("ut1/gambling/domains");
    std::fs::write(
        &list,
        "bet.example\n# a mistake below\nco.uk\nodds.example\n",
    )
    .unwrap();
    let text = classifier_user::policy::DEFAULT_POLICY.replacen(
        "description = \"Betting, casinos and poker\"",
        "description = \"Betting, casinos and poker\"\nlists = [\"ut1/gambling\"]",
        1,
    );
    let (ok, _, err) = check_file(&scratch, "suffix.toml", &text, &[]);
    assert!(!ok, "refused");
    assert!(
        err.contains(&format!("{}:3:", list.display()))
            && err.contains("categories.gambling.lists[0]")
            && err.contains("`co.uk` is a public suffix"),
        "{err}"
    );
    // A list saved with a byte order mark: its file and line.
    std::fs::write(&list, "\u{feff}bet.example\n").unwrap();
    let (ok, _, err) = check_file(&scratch, "suffix.toml", &text, &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!("{}:1:", list.display())) && err.contains("byte order mark"),
        "{err}"
    );
    // And an inline one: the policy's line.
    let inline =
        classifier_user::policy::DEFAULT_POLICY.replacen("\"coral.co.uk\"", "\"co.uk\"", 1);
    let (ok, _, err) = check_file(&scratch, "inline.toml", &inline, &[]);
    assert!(!ok);
    let line = line_with(&inline, "\"co.uk\"");
    assert!(
        err.contains(&format!("inline.toml:{line}:"))
            && err.contains("categories.gambling.domains"),
        "{err}"
    );
}

#[test]
fn policy_check_refuses_an_ambiguous_idle_timeout() {
    let Some(scratch) = SiteConfig::new("check-duration") else {
        return;
    };
    let text = classifier_user::policy::DEFAULT_POLICY.replacen(
        "idle_timeout = \"5 minutes\"",
        "idle_timeout = \"5M\"",
        1,
    );
    let (ok, _, err) = check_file(&scratch, "timeout.toml", &text, &[]);
    assert!(!ok);
    let line = line_with(&text, "idle_timeout = \"5M\"");
    assert!(
        err.contains(&format!("timeout.toml:{line}:"))
            && err.contains("records.idle_timeout")
            && err.contains("ambiguous (minutes or months?)"),
        "{err}"
    );
}

#[test]
fn policy_check_reads_gov_uk_bank_holidays_and_warns_when_they_run_out() {
    let Some(scratch) = SiteConfig::new("check-bank-holidays") else {
        return;
    };
    let text = scratch.default_policy_with_gov_uk_bank_holidays("northern-ireland");
    let (ok, _, err) = check_file(
        &scratch,
        "gov-uk.toml",
        &text,
        &["--at", AT_2026, "--strict"],
    );
    assert!(ok, "{err}");
    // In 2027 the copy holds no date in 2028.
    let (ok, _, err) = check_file(
        &scratch,
        "gov-uk.toml",
        &text,
        &["--at", "2027-03-01T09:00:00Z", "--strict"],
    );
    assert!(!ok);
    let line = line_with(&text, "bank-holidays-file = \"bank-holidays.json\"");
    assert!(
        err.contains(&format!("gov-uk.toml:{line}:"))
            && err.contains("schedule.bank-holidays-file")
            && err.contains("none falls in 2028")
            && err.contains("https://www.gov.uk/bank-holidays.json"),
        "{err}"
    );
    // The policy decides by Northern Ireland's dates: 13 July 2026 (the Boyne, substitute
    // day), 10:00 BST, is a bank holiday.
    let policy = scratch.work_dir().join("gov-uk.toml");
    let out = stdout(&scratch.classifier(&[
        "policy",
        "explain",
        "192.0.2.10",
        "www.youtube.com",
        "--at",
        "2026-07-13T09:00:00Z",
        "--policy",
        policy.to_str().unwrap(),
        "--json",
    ]));
    let explained: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(explained["period"], "outside", "{explained:#}");
}

#[test]
fn policy_check_warns_about_an_expired_exception_at_its_line() {
    let Some(scratch) = SiteConfig::new("check-expired") else {
        return;
    };
    let text = format!(
        "{}\n[[exceptions]]\nclient = \"192.0.2.42\"\ncategories = [\"cloud-storage\"]\n\
         approved_by = \"A. Manager\"\nreference = \"RITM0012345\"\nreason = \"Contractor \
         files\"\nexpires = \"2026-10-31\"\n",
        classifier_user::policy::DEFAULT_POLICY
    );
    let (ok, _, err) = check_file(&scratch, "expired.toml", &text, &["--at", AT_2026]);
    assert!(ok, "{err}");
    let line = line_with(&text, "expires = \"2026-10-31\"");
    assert!(
        err.contains(&format!("expired.toml:{line}:"))
            && err.contains("exceptions[0].expires")
            && err.contains("RITM0012345 expired"),
        "{err}"
    );
}

/// The built-in policy with a `news` category read from a UT1-style list directory
/// (`lists/news/domains`, beside the policy), blocked in working hours, written to
/// `scratch`; returns the policy's path and the list file's.
fn with_news_list(scratch: &SiteConfig) -> (String, String) {
    let list_dir = scratch.work_dir().join("lists/news");
    std::fs::create_dir_all(&list_dir).unwrap();
    let list = list_dir.join("domains");
    std::fs::write(
        &list,
        "# News sites, one a line (UT1 style)\n\nexample-news.test\nbbc.co.uk   # line 4\n\
         bücher.example\n",
    )
    .unwrap();
    let policy = scratch.work_dir().join("news-list.toml");
    std::fs::write(
        &policy,
        format!(
            "{}\n[categories.news]\nlists = [\"lists/news\"]\n\n[[rules]]\ndescription = \
             \"News: not at work\"\ncategories = \"news\"\nperiods = \"working\"\n\
             groups = [\"staff\", \"guest-wifi\"]\naction = \"block\"\n",
            classifier_user::policy::DEFAULT_POLICY
        ),
    )
    .unwrap();
    (
        policy.to_str().unwrap().to_owned(),
        list.to_str().unwrap().to_owned(),
    )
}

/// `policy explain` with `args` after `explain`, as JSON; the run must succeed.
fn explain_args(scratch: &SiteConfig, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["policy", "explain"];
    all.extend(args);
    all.push("--json");
    let out = stdout(&scratch.classifier(&all));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn explain_names_the_list_file_and_line_the_app_and_the_rule_s_whole_condition() {
    let Some(scratch) = SiteConfig::new("explain-why") else {
        return;
    };
    let (policy, list) = with_news_list(&scratch);
    // Monday 23 November 2026, 10:00 GMT: working hours.
    let at = ["--at", "2026-11-23T10:00:00Z", "--policy", &policy];
    let news = explain_args(
        &scratch,
        &[&["192.0.2.10", "www.bbc.co.uk"], &at[..]].concat(),
    );
    assert_eq!(news["category"], "news", "{news:#}");
    assert_eq!(news["matched_entry"], "bbc.co.uk", "{news:#}");
    assert_eq!(news["list_file"], list.as_str(), "{news:#}");
    assert_eq!(news["list_line"], 4, "{news:#}");
    assert_eq!(news["list_field"], serde_json::Value::Null, "{news:#}");
    assert_eq!(news["app"], serde_json::Value::Null, "{news:#}");
    assert_eq!(news["action"], "block", "{news:#}");
    assert_eq!(news["fail_fast"], true, "{news:#}");
    assert_eq!(news["rate"], serde_json::Value::Null, "{news:#}");
    assert_eq!(news["allowance"], serde_json::Value::Null, "{news:#}");
    assert_eq!(
        news["rule"]["categories"],
        serde_json::json!(["news"]),
        "{news:#}"
    );
    assert_eq!(
        news["rule"]["groups"],
        serde_json::json!(["staff", "guest-wifi"])
    );
    assert_eq!(news["rule"]["periods"], serde_json::json!(["working"]));
    assert_eq!(news["group_reason"]["by"], "prefix", "{news:#}");
    assert_eq!(news["group_reason"]["prefix"], "192.0.2.0/25", "{news:#}");
    let text = stdout(
        &scratch.classifier(
            &[
                &["policy", "explain", "192.0.2.10", "www.bbc.co.uk"][..],
                &at[..],
            ]
            .concat(),
        ),
    );
    assert!(
        text.contains(&format!("  matched:  bbc.co.uk ({list}:4)"))
            && text.contains("categories news; groups staff, guest-wifi; periods working")
            && text.contains("fail fast"),
        "{text}"
    );

    // An application's domain, listed in the policy file itself: its field and line, the
    // app, and a rule with an allowance (none used: no daemon counts use).
    let policy_text = std::fs::read_to_string(&policy).unwrap();
    let video = explain_args(
        &scratch,
        &[&["192.0.2.10", "www.youtube.com"], &at[..]].concat(),
    );
    assert_eq!(video["app"], "youtube", "{video:#}");
    assert_eq!(video["matched_entry"], "youtube.com", "{video:#}");
    assert_eq!(video["list_file"], policy.as_str(), "{video:#}");
    let line = video["list_line"].as_u64().unwrap() as usize;
    assert!(
        policy_text
            .lines()
            .nth(line - 1)
            .unwrap()
            .contains("\"youtube.com\""),
        "line {line}: {video:#}"
    );
    assert!(
        video["list_field"]
            .as_str()
            .unwrap()
            .starts_with("apps.youtube.domains["),
        "{video:#}"
    );
    assert_eq!(video["rate"], "16kbit", "{video:#}");
    assert_eq!(video["rate_bps"], 16_000, "{video:#}");
    assert_eq!(video["per_client"], true, "{video:#}");
    assert_eq!(video["fail_fast"], serde_json::Value::Null, "{video:#}");
    assert_eq!(video["allowance"]["measured"], false, "{video:#}");
    assert_eq!(
        video["allowance"]["minutes_used"], 0,
        "none used, offline: {video:#}"
    );
    assert_eq!(video["rule"]["periods"], serde_json::json!(["working"]));
}

#[test]
fn explain_says_why_a_client_is_in_its_group_by_prefix_address_or_vlan() {
    let Some(scratch) = SiteConfig::new("explain-group") else {
        return;
    };
    let at = "2026-11-23T10:00:00Z";
    let group = |args: &[&str]| {
        let answer = explain_args(
            &scratch,
            &[args, &["www.bbc.co.uk", "--at", at][..]].concat(),
        );
        (
            answer["group"].as_str().unwrap().to_owned(),
            answer["group_reason"].clone(),
        )
    };
    assert_eq!(
        group(&["192.0.2.10"]),
        (
            "staff".into(),
            serde_json::json!({"by": "prefix", "prefix": "192.0.2.0/25"})
        )
    );
    assert_eq!(
        group(&["2001:db8:1::77"]),
        (
            "staff".into(),
            serde_json::json!({"by": "prefix", "prefix": "2001:db8:1::/64"})
        )
    );
    // ICT's one address, inside no other group's prefix: listed in `addresses`.
    assert_eq!(
        group(&["192.0.2.5"]),
        (
            "ict".into(),
            serde_json::json!({"by": "address", "address": "192.0.2.5"})
        )
    );
    // Guest Wi-Fi claims VLAN 30 whatever the address.
    assert_eq!(
        group(&["198.51.100.7", "--vlan", "30"]),
        (
            "guest-wifi".into(),
            serde_json::json!({"by": "vlan", "vlan": 30})
        )
    );
    assert_eq!(
        group(&["198.51.100.7"]),
        ("default".into(), serde_json::json!({"by": "unclaimed"}))
    );
    let text = stdout(&scratch.classifier(&[
        "policy",
        "explain",
        "198.51.100.7",
        "www.bbc.co.uk",
        "--vlan",
        "30",
        "--at",
        at,
    ]));
    assert!(
        text.contains("  group:    guest-wifi (198.51.100.7 on VLAN 30: its VLAN 30"),
        "{text}"
    );
}

#[test]
fn explain_reads_local_times_in_the_site_zone_across_the_clock_changes() {
    let Some(scratch) = SiteConfig::new("explain-at") else {
        return;
    };
    let answer = |at: &str| explain_args(&scratch, &["192.0.2.10", "www.youtube.com", "--at", at]);
    // 16:45 is working hours (08:30-17:00) on the site's clock; read as UTC it would be
    // 17:45 BST, outside them.
    let bst = answer("2026-03-30 16:45");
    assert_eq!(bst["at"], "2026-03-30T15:45:00Z", "{bst:#}");
    assert_eq!(bst["period"], "working", "{bst:#}");
    assert_eq!(bst["timezone"], "Europe/London");
    assert_eq!(bst["at_local"], "2026-03-30 16:45:00 BST", "{bst:#}");
    let note = bst["at_note"].as_str().unwrap();
    assert!(
        note.contains("Europe/London") && note.contains("+01:00"),
        "{note}"
    );
    // The Friday before the clocks went forward: GMT.
    let gmt = answer("2026-03-27T16:45");
    assert_eq!(gmt["at"], "2026-03-27T16:45:00Z", "{gmt:#}");
    assert_eq!(gmt["period"], "working", "{gmt:#}");
    // RFC 3339 is read as written, with no note.
    let rfc = answer("2026-03-30T16:45:00Z");
    assert_eq!(rfc["period"], "outside", "17:45 BST: {rfc:#}");
    assert_eq!(rfc["at_note"], serde_json::Value::Null);
    // 01:30 on 29 March 2026 never happens in London: refused, saying so.
    let gap = scratch.classifier(&[
        "policy",
        "explain",
        "192.0.2.10",
        "www.youtube.com",
        "--at",
        "2026-03-29 01:30",
    ]);
    assert!(!gap.status.success());
    let said = stderr(&gap);
    assert!(
        said.contains("does not exist in Europe/London") && said.contains("2026-03-29T01:30:00"),
        "{said}"
    );
    // 01:30 on 25 October 2026 happens twice: the first (BST), said.
    let fold = answer("2026-10-25 01:30");
    assert_eq!(fold["at"], "2026-10-25T00:30:00Z", "{fold:#}");
    assert!(
        fold["at_note"].as_str().unwrap().contains("happens twice"),
        "{fold:#}"
    );
    // A time alone is today's, on the site's clock.
    let today = answer("12:30");
    assert!(
        today["at_local"].as_str().unwrap().contains(" 12:30:00 "),
        "{today:#}"
    );
    let text = stdout(&scratch.classifier(&[
        "policy",
        "explain",
        "192.0.2.10",
        "www.youtube.com",
        "--at",
        "2026-03-30 16:45",
    ]));
    assert!(
        text.contains("  time:     2026-03-30 16:45:00 BST (Europe/London)"),
        "{text}"
    );
    let garbage = scratch.classifier(&[
        "policy",
        "explain",
        "192.0.2.10",
        "www.youtube.com",
        "--at",
        "half past noon",
    ]);
    assert!(!garbage.status.success());
    assert!(
        stderr(&garbage).contains("Europe/London"),
        "{}",
        stderr(&garbage)
    );
}

#[test]
fn explain_takes_a_url_s_host_and_refuses_what_names_no_host() {
    let Some(scratch) = SiteConfig::new("explain-url") else {
        return;
    };
    let (policy, list) = with_news_list(&scratch);
    let at = ["--at", "2026-11-23T10:00:00Z", "--policy", &policy];
    let target = |url: &str| explain_args(&scratch, &[&["192.0.2.10", url], &at[..]].concat());

    let plain = target("https://www.bbc.co.uk/news/uk?page=2#top");
    assert_eq!(plain["target"], "www.bbc.co.uk", "{plain:#}");
    assert_eq!(plain["category"], "news", "{plain:#}");
    // Userinfo, a port and capitals are not part of the host.
    let dressed = target("HTTPS://someone:secret@WWW.BBC.CO.UK:8443/x");
    assert_eq!(dressed["target"], "www.bbc.co.uk", "{dressed:#}");
    // What comes before `@` is userinfo: the browser goes to the host after it.
    let decoy = target("https://www.bbc.co.uk@evil.example/");
    assert_eq!(decoy["target"], "evil.example", "{decoy:#}");
    assert_eq!(decoy["category"], "uncategorized", "{decoy:#}");
    // An internationalised host is read in punycode, as the list is.
    let idn = target("https://Bücher.example/katalog");
    assert_eq!(idn["target"], "xn--bcher-kva.example", "{idn:#}");
    assert_eq!(idn["matched_entry"], "xn--bcher-kva.example", "{idn:#}");
    assert_eq!(
        (&idn["list_file"], &idn["list_line"]),
        (&list.as_str().into(), &5.into())
    );
    // And so is a name given alone.
    let bare = target("BÜCHER.example");
    assert_eq!(bare["target"], "xn--bcher-kva.example", "{bare:#}");

    for (hostile, says) in [
        ("https://[2001:db8::1]:443/", "names an address"),
        ("http://192.0.2.1/admin", "names an address"),
        ("https://", "is not a URL"),
        ("https://exa mple.com/", "is not a URL"),
        ("ftp://files.example/pub", "only http:// and https://"),
        ("javascript:alert(1)", "is not a domain name"),
        (
            "www.bbc.co.uk/news",
            "a whole URL (https://www.bbc.co.uk/news)",
        ),
        ("not a host!", "is not a domain name"),
    ] {
        let output =
            scratch.classifier(&[&["policy", "explain", "192.0.2.10", hostile], &at[..]].concat());
        let said = stderr(&output);
        assert!(
            !output.status.success() && said.contains(says),
            "{hostile}: {said}"
        );
    }
}

#[test]
fn exceptions_add_refuses_a_past_expiry_and_names_the_exceptions_file() {
    let Some(scratch) = SiteConfig::new("exceptions-past") else {
        return;
    };
    let file = scratch.work_dir().join("exceptions.toml");
    let file = file.to_str().unwrap();
    let add = |expires: &str, category: &str| {
        scratch.classifier(&[
            "exceptions",
            "add",
            "--client",
            "192.0.2.10",
            "--category",
            category,
            "--approved-by",
            "J. Smith (line manager)",
            "--reference",
            "RITM0099999",
            "--reason",
            "Backdated by mistake",
            "--expires",
            expires,
            "--exceptions",
            file,
            "--control-socket",
            "/nonexistent/no-daemon.sock",
        ])
    };
    let past = add("2020-01-31", "cloud-storage");
    assert!(!past.status.success());
    let said = stderr(&past);
    assert!(
        said.contains(file) && said.contains("has passed") && !said.contains(".new"),
        "{said}"
    );
    assert!(!Path::new(file).exists(), "nothing written");

    // With a file there: a past expiry and an unknown category leave it as it was, and
    // the errors name it, not a file of the command's.
    stdout(&add("2099-01-31", "cloud-storage"));
    let before = std::fs::read_to_string(file).unwrap();
    let past = add("2021-06-30T12:00:00Z", "cloud-storage");
    assert!(
        !past.status.success() && stderr(&past).contains(file),
        "{}",
        stderr(&past)
    );
    let unknown = add("2099-01-31", "no-such-category");
    let said = stderr(&unknown);
    assert!(
        !unknown.status.success()
            && said.contains(&format!("{file}:"))
            && said.contains("no-such-category")
            && !said.contains(".new"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(file).unwrap(), before);
}

#[test]
fn show_prints_conditions_schedule_holidays_and_retention() {
    let Some(scratch) = SiteConfig::new("show-all") else {
        return;
    };
    let policy = scratch.work_dir().join("gov-uk.toml");
    let text = scratch.default_policy_with_gov_uk_bank_holidays("scotland");
    std::fs::write(&policy, text).unwrap();
    let policy = policy.to_str().unwrap();
    let text = stdout(&scratch.classifier(&["policy", "show", "--policy", policy]));
    for expected in [
        "  lunch        mon-fri 12:00-13:00 (not on bank holidays)",
        "  working      mon-fri 08:30-17:00 (not on bank holidays)",
        "else `outside`",
        "bank-holidays.json, division scotland)",
        // St Andrew's Day (substitute) is Scotland's alone.
        "2026: 01-01 01-02",
        "11-30",
        "when: categories streaming-video, streaming-audio; groups every group; periods working",
        "retention: flow records keep the client for 14 months, then delete",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&stdout(
        &scratch.classifier(&["policy", "show", "--policy", policy, "--json"]),
    ))
    .unwrap();
    assert_eq!(json["bank_holidays"]["division"], "scotland", "{json:#}");
    assert!(
        json["bank_holidays"]["file"]
            .as_str()
            .unwrap()
            .ends_with("bank-holidays.json")
    );
    assert!(
        json["bank_holidays"]["dates"]
            .as_array()
            .unwrap()
            .contains(&"2026-11-30".into()),
        "{json:#}"
    );
    assert_eq!(json["retention"]["keep"], "14 months", "{json:#}");
    assert_eq!(json["schedule"]["default"], "outside");
    assert_eq!(json["schedule"]["periods"][0]["name"], "lunch");
    let first = &json["rules"][0];
    assert_eq!(first["groups"], serde_json::Value::Null, "every group");
    assert!(
        first["categories"]
            .as_array()
            .unwrap()
            .contains(&"adult".into())
    );
}
