use std::path::Path;

use classifier_common::{classify::app, config::quic_mode};

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("test.toml"), Path::new("."))
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
        "extremist-illegal",
        "money-making",
        "cloud-storage",
        "file-sharing",
        "doh",
        "quic",
    ] {
        assert!(
            categories.iter().any(|c| c == expected),
            "{expected} missing"
        );
    }
    assert_eq!(
        policy.classes.report.collisions,
        Vec::<(String, String)>::new()
    );
    assert_eq!(policy.datapath.quic_mode, quic_mode::CLASSIFY);
    assert_eq!(policy.datapath.peer_ttl_secs, 600);
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
            "test.toml:2:",
            "categories.video.domains[1]",
            "not a domain name",
        ),
        (
            "[categories.video]\n[apps.yt]\ncategory = \"vidoe\"\n",
            "test.toml:3:",
            "apps.yt.category",
            "no category `vidoe`",
        ),
        (
            "[categories.video]\nports = [\"tcp/99999\"]\n",
            "test.toml:2:",
            "categories.video.ports[0]",
            "tcp/PORT",
        ),
        (
            "[categories.video]\ndomians = []\n",
            "test.toml:2:",
            "categories.video.domians",
            "unknown field `domians`",
        ),
        (
            "[site]\ntimezone = \"Europe/Londn\"\n",
            "test.toml:2:",
            "site.timezone",
            "unknown time zone",
        ),
        (
            "[categories.p2p]\nprotocols = [\"edonkey\"]\n",
            "test.toml:2:",
            "categories.p2p.protocols[0]",
            "unknown protocol",
        ),
        (
            "[quic]\nmode = \"sometimes\"\n",
            "test.toml:2:",
            "quic.mode",
            "classify",
        ),
        (
            "[bittorrent]\npeer_ttl = \"soon\"\n",
            "test.toml:2:",
            "bittorrent.peer_ttl",
            "10m",
        ),
        (
            "[categories.video]\nlists = [\"/nonexistent/ut1/video\"]\n",
            "test.toml:2:",
            "categories.video.lists[0]",
            "cannot read /nonexistent/ut1/video",
        ),
        ("[categories.video\n", "test.toml:1:", "(file)", ""),
    ];
    for (text, location, field, message) in cases {
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with(location), "{shown}");
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
