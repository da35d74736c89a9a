//! Dangerous policy files: each is refused, or warned about, at its line.

use std::path::Path;

use super::*;
use crate::policy::DEFAULT_POLICY;

/// Saturday 5 December 2026, noon.
const NOW: &str = "2026-12-05T12:00:00Z";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn check_at(text: &str, now: &str) -> Result<Checked, PolicyError> {
    check_text(text, Path::new("test.toml"), Path::new("."), at(now))
}

fn warnings_at(text: &str, now: &str) -> Vec<PolicyError> {
    check_at(text, now)
        .unwrap_or_else(|e| panic!("refused: {e}\n{text}"))
        .warnings
}

fn warnings(text: &str) -> Vec<PolicyError> {
    warnings_at(text, NOW)
}

/// The 1-based line where `marker` first appears in `text`.
fn line_of(text: &str, marker: &str) -> usize {
    let offset = text
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in {text}"));
    text[..offset].matches('\n').count() + 1
}

/// Asserts that exactly one warning is about `field`, at the line of `marker`, and says
/// each of `says`.
fn assert_warned(found: &[PolicyError], text: &str, marker: &str, field: &str, says: &[&str]) {
    let about: Vec<&PolicyError> = found.iter().filter(|w| w.field == field).collect();
    assert_eq!(about.len(), 1, "one warning about {field}: {found:#?}");
    let warning = about[0];
    assert_eq!(warning.file, "test.toml");
    assert_eq!(warning.line, line_of(text, marker), "{warning}");
    for part in says {
        assert!(
            warning.message.contains(part),
            "`{part}` missing: {warning}"
        );
    }
}

/// Asserts that `text` is refused at the line of `marker`, field `field`, saying `says`.
fn assert_refused(text: &str, marker: &str, field: &str, says: &[&str]) {
    let err = check_at(text, NOW).expect_err(text);
    assert_eq!(err.field, field, "{err}");
    assert_eq!(err.line, line_of(text, marker), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("test.toml:{}:", err.line)),
        "{shown}"
    );
    for part in says {
        assert!(shown.contains(part), "`{part}` missing: {shown}");
    }
}

/// A small council policy: every category is used, nothing is shadowed.
const BASE: &str = r#"[site]
name = "Test"

[schedule]
default = "outside"
bank-holidays = ["2026-12-25", "2027-12-27"]

[[schedule.period]]
name = "lunch"
days = "weekdays"
hours = "12:00-13:00"

[[schedule.period]]
name = "working"
days = "weekdays"
hours = "08:30-17:00"

[categories.video]
domains = ["video.example"]

[categories.games]
domains = ["games.example"]

[groups.staff]
prefixes = ["192.0.2.0/25"]

[[rules]]
description = "No games"
categories = "games"
action = "block"

[[rules]]
description = "Video at work, slowly"
categories = "video"
periods = "working"
action = "shape"
rate = "1mbit"

[[rules]]
description = "Video otherwise"
categories = "video"
action = "shape"
rate = "5mbit"
"#;

#[test]
fn the_base_and_the_shipped_policy_have_nothing_to_warn_about() {
    assert_eq!(warnings(BASE), Vec::<PolicyError>::new());
    let shipped = check_text(
        DEFAULT_POLICY,
        Path::new("council-default.toml"),
        Path::new("."),
        at(NOW),
    )
    .unwrap();
    assert_eq!(shipped.warnings, Vec::<PolicyError>::new());
}

#[test]
fn the_shipped_policy_warns_when_its_bank_holidays_run_out() {
    // In 2027 the shipped dates (through 2027) have none in 2028: 25 December 2028 would be
    // a working day.
    let text = DEFAULT_POLICY;
    let found = check_text(
        text,
        Path::new("test.toml"),
        Path::new("."),
        at("2027-01-04T09:00:00Z"),
    )
    .unwrap()
    .warnings;
    assert_warned(
        &found,
        text,
        "bank-holidays = [",
        "schedule.bank-holidays",
        &["2027-12-28", "none falls in 2028", "working days"],
    );
}

#[test]
fn a_break_listed_after_the_hours_it_interrupts_is_never_in_force() {
    let text = BASE.replace(
        "[[schedule.period]]\nname = \"lunch\"\ndays = \"weekdays\"\nhours = \"12:00-13:00\"\n\n",
        "",
    ) + "\n[[schedule.period]]\nname = \"lunch\"\ndays = \"weekdays\"\nhours = \"12:00-13:00\"\n";
    let found = warnings(&text);
    assert_warned(
        &found,
        &text,
        "name = \"lunch\"",
        "schedule.period[1].name",
        &[
            "`lunch` can never be in force",
            "`working` (schedule.period[0])",
            "list `lunch` before",
        ],
    );
}

#[test]
fn a_period_covered_only_by_several_earlier_ones_is_never_in_force() {
    // Mornings and afternoons, then "day" over both, then an evening range crossing midnight
    // that "late" covers from the day before.
    let text = r#"[schedule]
[[schedule.period]]
name = "morning"
days = "daily"
hours = "06:00-12:00"
bank-holidays = true
[[schedule.period]]
name = "afternoon"
days = "daily"
hours = "12:00-18:00"
bank-holidays = true
[[schedule.period]]
name = "day"
days = "weekdays"
hours = "09:00-17:00"
[[schedule.period]]
name = "night"
days = "daily"
hours = "22:00-02:00"
[[schedule.period]]
name = "small-hours"
days = "tue"
hours = "00:00-01:00"
"#;
    let found = warnings(text);
    assert_warned(
        &found,
        text,
        "name = \"day\"",
        "schedule.period[2].name",
        &["`morning` (schedule.period[0]) and `afternoon` (schedule.period[1])"],
    );
    assert_warned(
        &found,
        text,
        "name = \"small-hours\"",
        "schedule.period[4].name",
        &["`night` (schedule.period[3])"],
    );
    // Bank-holiday-only reach is reach: on a bank holiday, "night" (no bank-holidays) does
    // not cover, so a bank-holiday period under it is in force then.
    let on_call = r#"[schedule]
bank-holidays = ["2027-12-27"]
[[schedule.period]]
name = "night"
days = "daily"
hours = "00:00-24:00"
[[schedule.period]]
name = "on-call"
days = "daily"
hours = "00:00-24:00"
bank-holidays = true
"#;
    assert!(
        !warnings(on_call)
            .iter()
            .any(|w| w.field.starts_with("schedule.period")),
        "{:?}",
        warnings(on_call)
    );
}

#[test]
fn a_rule_an_earlier_rule_always_matches_first_is_unreachable() {
    let text = BASE.replace(
        "[[rules]]\ndescription = \"No games\"",
        "[[rules]]\ndescription = \"Video: never\"\ncategories = [\"video\", \"games\"]\naction = \
         \"block\"\n\n[[rules]]\ndescription = \"No games\"",
    );
    let found = warnings(&text);
    // Each rule's `action`, counted from its description.
    for (rule, marker, below) in [
        (1, "No games", 2),
        (2, "Video at work", 3),
        (3, "Video otherwise", 2),
    ] {
        let field = format!("rules[{rule}].action");
        let line = line_of(&text, marker) + below;
        let warning = found
            .iter()
            .find(|w| w.field == field)
            .unwrap_or_else(|| panic!("no warning about {field}: {found:#?}"));
        assert_eq!(warning.line, line, "{warning}");
        assert!(
            warning.message.contains("can never decide")
                && warning.message.contains("rules[0] (\"Video: never\")"),
            "{warning}"
        );
    }
}

#[test]
fn a_rule_earlier_rules_cover_together_is_unreachable() {
    // Games: blocked at work, blocked at lunch and outside: nothing is left for rule 2.
    let text = BASE.replace(
        "[[rules]]\ndescription = \"No games\"\ncategories = \"games\"\naction = \"block\"",
        "[[rules]]\ndescription = \"Games at work\"\ncategories = \"games\"\nperiods = \
         \"working\"\naction = \"block\"\n\n[[rules]]\ndescription = \"Games otherwise\"\n\
         categories = \"games\"\nperiods = [\"lunch\", \"outside\"]\naction = \"block\"\n\n\
         [[rules]]\ndescription = \"Games, slowly\"\ncategories = \"games\"\naction = \
         \"shape\"\nrate = \"1mbit\"",
    );
    let found = warnings(&text);
    let marker = "action = \"shape\"\nrate = \"1mbit\"\n\n[[rules]]\ndescription = \"Video at";
    assert_warned(
        &found,
        &text,
        marker,
        "rules[2].action",
        &[
            "rules[0] (\"Games at work\")",
            "rules[1] (\"Games otherwise\")",
        ],
    );
    // For one group only, the later rule still reaches everyone else.
    let one_group = text.replace(
        "periods = [\"lunch\", \"outside\"]",
        "periods = [\"lunch\", \"outside\"]\ngroups = \"staff\"",
    );
    assert!(
        !warnings(&one_group)
            .iter()
            .any(|w| w.field.starts_with("rules")),
        "{:#?}",
        warnings(&one_group)
    );
}

#[test]
fn a_rule_for_a_period_never_in_force_is_unreachable() {
    let text = BASE.to_owned()
        + "\n[[schedule.period]]\nname = \"lunch-again\"\ndays = \"mon\"\nhours = \
           \"12:15-12:45\"\n\n[[rules]]\ncategories = \"video\"\nperiods = \"lunch-again\"\n\
           action = \"block\" # never\n";
    let found = warnings(&text);
    assert_warned(
        &found,
        &text,
        "name = \"lunch-again\"",
        "schedule.period[2].name",
        &["`lunch` (schedule.period[0]), listed before it, covers every moment"],
    );
    assert_warned(
        &found,
        &text,
        "action = \"block\" # never",
        "rules[3].action",
        &["none of its periods is ever in force"],
    );
}

#[test]
fn an_exception_that_has_expired_is_warned_about() {
    let text = format!(
        "{BASE}\n[[exceptions]]\nclient = \"192.0.2.42\"\ncategories = [\"games\"]\n\
         approved_by = \"A. Manager\"\nreference = \"RITM0001\"\nreason = \"Testing\"\n\
         expires = \"2026-11-30\"\n\n[[exceptions]]\nclient = \"192.0.2.43\"\ncategories = \
         [\"games\"]\napproved_by = \"A. Manager\"\nreference = \"RITM0002\"\nreason = \
         \"Testing\"\nexpires = \"2027-03-31\"\n"
    );
    let found = warnings(&text);
    assert_warned(
        &found,
        &text,
        "expires = \"2026-11-30\"",
        "exceptions[0].expires",
        &["RITM0001", "expired at 2026-12-01 00:00 GMT"],
    );
    assert!(!found.iter().any(|w| w.field == "exceptions[1].expires"));
    // A day later than its date, the second one has expired too.
    assert!(
        warnings_at(&text, "2027-04-01T00:00:00Z")
            .iter()
            .any(|w| w.field == "exceptions[1].expires")
    );
}

#[test]
fn bank_holidays_that_end_before_next_year_are_warned_about() {
    let text = BASE.replace(
        "bank-holidays = [\"2026-12-25\", \"2027-12-27\"]",
        "bank-holidays = [\"2026-12-25\", \"2026-12-28\"]",
    );
    assert_warned(
        &warnings(&text),
        &text,
        "bank-holidays = [",
        "schedule.bank-holidays",
        &[
            "2026-12-28",
            "none falls in 2027",
            "https://www.gov.uk/bank-holidays",
        ],
    );
    let none = BASE.replace("bank-holidays = [\"2026-12-25\", \"2027-12-27\"]\n", "");
    assert!(
        warnings(&none)
            .iter()
            .any(|w| w.message.contains("no bank holidays are listed")),
        "{:#?}",
        warnings(&none)
    );
    // A schedule whose every period applies on bank holidays does not care.
    let all_days = "[schedule]\n[[schedule.period]]\nname = \"open\"\ndays = \"daily\"\nhours = \
                    \"08:00-20:00\"\nbank-holidays = true\n";
    assert_eq!(warnings(all_days), Vec::<PolicyError>::new());
}

#[test]
fn a_strict_default_period_is_warned_about() {
    // `working` for every moment no period covers: nights and weekends get work's rules.
    let text = BASE.replace("default = \"outside\"", "default = \"working\"");
    assert_warned(
        &warnings(&text),
        &text,
        "default = \"working\"",
        "schedule.default",
        &[
            "`default = \"working\"`",
            "stricter than `lunch`'s",
            "video in group `default` is shape 1mbit shared (rules[1]) in `working` and \
             shape 5mbit shared (rules[2]) in `lunch`",
        ],
    );
    // A default no moment falls in is not a risk.
    let full = text.replace(
        "days = \"weekdays\"\nhours = \"08:30-17:00\"",
        "days = \"daily\"\nhours = \"00:00-24:00\"\nbank-holidays = true",
    );
    assert!(
        !warnings(&full)
            .iter()
            .any(|w| w.field == "schedule.default"),
        "{:#?}",
        warnings(&full)
    );
}

#[test]
fn a_category_no_rule_names_is_warned_about() {
    let text = BASE.replace(
        "[groups.staff]",
        "[categories.news]\ndomains = [\"news.example\"]\n\n[groups.staff]",
    );
    assert_warned(
        &warnings(&text),
        &text,
        "[categories.news]",
        "categories.news",
        &["no rule names category `news`", "always allowed"],
    );
    // A rule for every category uses them all.
    let catch_all = text.replace(
        "[[rules]]\ndescription = \"No games\"",
        "[[rules]]\ngroups = \"staff\"\nperiods = \"working\"\naction = \"block\"\n\n[[rules]]\n\
         description = \"No games\"",
    );
    assert!(
        !warnings(&catch_all)
            .iter()
            .any(|w| w.field == "categories.news"),
        "{:#?}",
        warnings(&catch_all)
    );
}

// ---- What is refused outright: it would silently change enforcement. ----

#[test]
fn empty_hours_or_days_are_refused() {
    for (from, to, field) in [
        (
            "days = \"weekdays\"\nhours = \"12:00-13:00\"",
            "days = []\nhours = \"12:00-13:00\"",
            "schedule.period[0].days",
        ),
        (
            "days = \"weekdays\"\nhours = \"12:00-13:00\"",
            "days = \"weekdays\"\nhours = []",
            "schedule.period[0].hours",
        ),
        (
            "days = \"weekdays\"\nhours = \"08:30-17:00\"",
            "days = \"weekdays\"\nhours = \"08:30-17:00\"\nhours-by-day = { fri = [] }",
            "schedule.period[1].hours-by-day.fri",
        ),
    ] {
        let text = BASE.replace(from, to);
        assert_ne!(text, BASE);
        let marker = to.lines().last().unwrap();
        let marker = if field.ends_with("days") {
            "days = []"
        } else {
            marker
        };
        assert_refused(
            &text,
            marker,
            field,
            &["an empty list", "never be in force"],
        );
    }
}

#[test]
fn an_empty_list_in_a_rule_is_refused() {
    for (key, every) in [
        ("categories", "every category"),
        ("groups", "every group"),
        ("periods", "at all times"),
    ] {
        let text = BASE.replace(
            "categories = \"games\"\naction = \"block\"",
            &format!("categories = \"games\"\n{key} = []\naction = \"block\"")
                .replace("categories = \"games\"\ncategories = []", "categories = []"),
        );
        assert_refused(
            &text,
            &format!("{key} = []"),
            &format!("rules[0].{key}"),
            &[every, "an empty list"],
        );
    }
}

#[test]
fn a_bare_public_suffix_is_refused_at_its_line() {
    for suffix in ["com", "co.uk", "*.co.uk", "gov.uk"] {
        let text = BASE.replace(
            "domains = [\"games.example\"]",
            &format!("domains = [\n    \"games.example\",\n    \"{suffix}\",\n]"),
        );
        assert_refused(
            &text,
            &format!("\"{suffix}\""),
            "categories.games.domains[1]",
            &["public suffix", "list the sites themselves"],
        );
    }
    let app = format!(
        "{BASE}\n[apps.tube]\ncategory = \"video\"\ndomains = [\"tube.example\", \"uk\"]\n"
    );
    assert_refused(&app, "\"uk\"", "apps.tube.domains[1]", &["`uk`"]);
}

#[test]
fn internationalised_names_are_listed_in_punycode() {
    let text = BASE.replace(
        "domains = [\"games.example\"]",
        "domains = [\"spiele.bücher.example\"]",
    );
    let policy = check_at(&text, NOW).unwrap().policy;
    let games = policy.classes.category_id("games").unwrap();
    for name in [
        "spiele.xn--bcher-kva.example",
        "www.spiele.xn--bcher-kva.example",
    ] {
        assert_eq!(
            policy.classes.lookup(name).map(|e| e.category),
            Some(games),
            "{name}"
        );
    }
}

#[test]
fn ambiguous_durations_are_refused_in_every_field() {
    let cases = [
        ("[records]\nidle_timeout = \"5m\"\n", "records.idle_timeout"),
        ("[records]\nidle_timeout = \"5M\"\n", "records.idle_timeout"),
        ("[bittorrent]\npeer_ttl = \"10m\"\n", "bittorrent.peer_ttl"),
        (
            "[export]\nipfix_active_timeout = \"30m\"\n",
            "export.ipfix_active_timeout",
        ),
        (
            "[degradation]\nintervals = [\"10s\", \"5m\"]\n",
            "degradation.intervals",
        ),
    ];
    for (section, field) in cases {
        let text = format!("{BASE}\n{section}");
        let marker = section.lines().nth(1).unwrap();
        assert_refused(
            &text,
            marker,
            field,
            &["ambiguous (minutes or months?)", "`5min`"],
        );
    }
    let allowance = BASE.replace(
        "rate = \"1mbit\"",
        "rate = \"1mbit\"\nallowance = \"20MB/10m\"",
    );
    assert_refused(
        &allowance,
        "allowance = ",
        "rules[1].allowance",
        &["ambiguous (minutes or months?)"],
    );
    // Spelled out, they are read as written.
    let text = format!(
        "{BASE}\n[records]\nidle_timeout = \"5 minutes\"\n[bittorrent]\npeer_ttl = \"10min\"\n"
    );
    let policy = check_at(&text, NOW).unwrap().policy;
    assert_eq!(
        policy.records.end_rules.idle_timeout,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(policy.datapath.config.peer_ttl_secs, 600);
}

/// A scratch directory for list and bank-holiday files, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("classifier-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn check(&self, text: &str, now: &str) -> Result<Checked, PolicyError> {
        check_text(text, Path::new("test.toml"), &self.0, at(now))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_list_file_that_is_not_utf8_or_has_a_bom_is_refused_with_the_list_file_and_line() {
    let scratch = Scratch::new("lists");
    let text = BASE.replace(
        "domains = [\"games.example\"]",
        "domains = [\"games.example\"]\nlists = [\"ut1/games\"]",
    );
    std::fs::create_dir_all(scratch.0.join("ut1/games")).unwrap();
    let list = scratch.0.join("ut1/games/domains");
    for (bytes, line, says) in [
        (
            &b"one.example\n\xef\xbb\xbftwo.example\n"[..],
            2,
            "byte order mark",
        ),
        (&b"\xef\xbb\xbfone.example\n"[..], 1, "byte order mark"),
        (
            &b"one.example\ntwo.example\nch\xe2teau.example\n"[..],
            3,
            "not UTF-8",
        ),
        (&b"one.example\nco.uk\n"[..], 2, "public suffix"),
    ] {
        std::fs::write(&list, bytes).unwrap();
        let err = scratch.check(&text, NOW).expect_err(says);
        assert_eq!(err.file, list.display().to_string(), "{err}");
        assert_eq!(err.line, line, "{err}");
        assert_eq!(err.field, "categories.games.lists[0]", "{err}");
        assert!(err.message.contains(says), "{err}");
    }
    std::fs::write(&list, "one.example\nBücher.example\n").unwrap();
    let policy = scratch.check(&text, NOW).unwrap().policy;
    assert!(policy.classes.lookup("xn--bcher-kva.example").is_some());
}

#[test]
fn bank_holidays_from_gov_uks_file() {
    let scratch = Scratch::new("bank-holidays");
    std::fs::write(
        scratch.0.join("bank-holidays.json"),
        crate::policy::bank_holidays::SHIPPED,
    )
    .unwrap();
    let text = BASE.replace(
        "bank-holidays = [\"2026-12-25\", \"2027-12-27\"]",
        "bank-holidays-file = \"bank-holidays.json\"\nbank-holidays-division = \"scotland\"",
    );
    let checked = scratch.check(&text, NOW).unwrap();
    assert_eq!(checked.warnings, Vec::<PolicyError>::new());
    let schedule = &checked.policy.schedule;
    // St Andrew's Day, Monday 30 November 2026, 10:00: a bank holiday in Scotland.
    assert_eq!(
        schedule.period_at(at("2026-11-30T10:00:00Z")).name,
        "outside"
    );
    // Easter Monday is not one in Scotland.
    assert_eq!(
        schedule.period_at(at("2026-04-06T10:00:00Z")).name,
        "working"
    );

    // When the copy runs out: refresh it from gov.uk.
    let found = scratch
        .check(&text, "2027-02-01T09:00:00Z")
        .unwrap()
        .warnings;
    assert_warned(
        &found,
        &text,
        "bank-holidays-file",
        "schedule.bank-holidays-file",
        &[
            "none falls in 2028",
            "https://www.gov.uk/bank-holidays.json",
        ],
    );

    // The two keys go together, and the division must be the file's.
    let no_division = text.replace("bank-holidays-division = \"scotland\"", "");
    let err = scratch.check(&no_division, NOW).unwrap_err();
    assert_eq!(err.field, "schedule.bank-holidays-file", "{err}");
    assert!(err.message.contains("england-and-wales"), "{err}");
    let wales = text.replace("\"scotland\"", "\"wales\"");
    let err = scratch.check(&wales, NOW).unwrap_err();
    assert_eq!(err.line, line_of(&wales, "bank-holidays-file"), "{err}");
    assert!(err.message.contains("no division `wales`"), "{err}");
    // Not gov.uk's file: the JSON file and its line.
    std::fs::write(scratch.0.join("bank-holidays.json"), "{\n\"scotland\": [\n").unwrap();
    let err = scratch.check(&text, NOW).unwrap_err();
    assert!(err.message.contains("bank-holidays.json:3:"), "{err}");
    let missing = text.replace("bank-holidays.json", "nowhere.json");
    let err = scratch.check(&missing, NOW).unwrap_err();
    assert!(err.message.contains("cannot read"), "{err}");
}

#[test]
fn the_shipped_policy_lists_the_shipped_files_england_and_wales_dates() {
    // The default policy types its dates (it must load with no file beside it); they are
    // the shipped gov.uk copy's, from 2026 on.
    let shipped: std::collections::BTreeSet<_> = crate::policy::bank_holidays::dates_of(
        crate::policy::bank_holidays::SHIPPED,
        "england-and-wales",
    )
    .unwrap()
    .into_iter()
    .filter(|d| d.year() >= 2026)
    .collect();
    let policy = crate::policy::Policy::default_council();
    assert_eq!(policy.schedule.bank_holidays(), &shipped);
}
