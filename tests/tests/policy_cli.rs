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
            "action": "block"
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
    std::fs::write(
        scratch.work_dir().join("bank-holidays.json"),
        classifier_user::policy::bank_holidays::SHIPPED,
    )
    .unwrap();
    let default = classifier_user::policy::DEFAULT_POLICY;
    let start = default.find("bank-holidays = [").unwrap();
    let end = start + default[start..].find("]\n").unwrap() + 2;
    let text = format!(
        "{}bank-holidays-file = \"bank-holidays.json\"\nbank-holidays-division = \
         \"northern-ireland\"\n{}",
        &default[..start],
        &default[end..]
    );
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
