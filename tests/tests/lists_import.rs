//! `classifier lists import`: UT1 tarballs built here, served inside a lab and imported by
//! the real command from the gateway's namespace while the daemon runs: a site in the new
//! list is blocked for a real client, the previous copy is kept and rollback brings it
//! back. Hostile and broken tarballs (path traversal, absolute paths, links out, devices,
//! a public suffix, a byte order mark, truncated or corrupt gzip, a file over the limit, a
//! download over the limit) are each refused with a clear error and the lists in force
//! stay as they were.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use classifier_lab::{
    Host, Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    http::HttpServer,
    topology::SERVICE_V4,
};
use classifier_tests::{classifier_bin, privileged};
use tar::EntryType;

/// The site the imported list adds to `gambling`.
const NEW_SITE: &str = "www.casino-royale.test";
const NEW_ENTRY: &str = "casino-royale.test";
/// In the list before and after.
const OLD_ENTRY: &str = "old-casino.test";
const TARBALL_PORT: u16 = 8080;

/// A scratch directory: the lists directory, its versions, the policy; removed on drop.
struct Site {
    dir: PathBuf,
}

impl Site {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "classifier-lists-import-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.toml"), policy(&dir.join("ut1"))).unwrap();
        Self { dir }
    }

    fn lists_dir(&self) -> PathBuf {
        self.dir.join("ut1")
    }

    fn policy(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }

    /// `classifier lists SUBCOMMAND ... --lists-dir --policy --control-socket`.
    fn lists_command(&self, mut command: Command, args: &[&str], socket: &Path) -> Output {
        command
            .arg("lists")
            .args(args)
            .arg("--lists-dir")
            .arg(self.lists_dir())
            .arg("--policy")
            .arg(self.policy())
            .arg("--control-socket")
            .arg(socket)
            .output()
            .expect("classifier runs")
    }

    /// Imports `source` here (no daemon).
    fn import(&self, source: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["import", source.to_str().unwrap()];
        args.extend(extra);
        self.lists_command(
            Command::new(classifier_bin()),
            &args,
            &self.dir.join("no-daemon.sock"),
        )
    }

    /// The version in force and what its gambling list holds.
    fn installed(&self) -> (PathBuf, String) {
        let version = std::fs::read_link(self.lists_dir()).expect("the lists link");
        let list = std::fs::read_to_string(self.lists_dir().join("gambling/domains")).unwrap();
        (version, list)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Gambling from the lists directory, blocked at all times.
fn policy(lists_dir: &Path) -> String {
    format!(
        r#"
[site]
name = "Lab"

[schedule]
default = "working"

[categories.gambling]
lists = ["{}/gambling"]

[[rules]]
description = "Gambling: blocked"
categories = "gambling"
action = "block"
"#,
        lists_dir.display()
    )
}

/// One tar entry, written byte for byte (the tar crate's own setters refuse `..` and
/// absolute names, which is what a hostile tarball has).
struct Entry<'a> {
    name: &'a str,
    kind: EntryType,
    data: &'a [u8],
    link: &'a str,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind: EntryType::Regular,
        data,
        link: "",
    }
}

fn tarball(entries: &[Entry<'_>]) -> Vec<u8> {
    let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gzip);
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        header.as_old_mut().linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        header.set_entry_type(entry.kind);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(entry.data.len() as u64);
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A UT1 tarball: `blacklists/<category>/domains` and `urls`, an alias link, a README.
fn ut1_tarball(gambling: &str) -> Vec<u8> {
    tarball(&[
        Entry {
            name: "blacklists/",
            kind: EntryType::Directory,
            data: b"",
            link: "",
        },
        file("blacklists/README", b"UT1 blacklists (test copy)\n"),
        file("blacklists/gambling/domains", gambling.as_bytes()),
        file("blacklists/gambling/urls", b"old-casino.test/poker\n"),
        file(
            "blacklists/agressif/domains",
            "hate.test\nBücher-hass.test\n".as_bytes(),
        ),
        Entry {
            name: "blacklists/jeux",
            kind: EntryType::Symlink,
            data: b"",
            link: "gambling",
        },
    ])
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// Asserts that the import `name` was refused, saying `expected` and that the installed
/// lists stayed as they were.
#[track_caller]
fn assert_refused(name: &str, refused: &Output, expected: &str) {
    assert!(
        !refused.status.success(),
        "{name}: accepted:\n{}",
        stdout(refused)
    );
    let message = stderr(refused);
    assert!(message.contains(expected), "{name}: {message}");
    assert!(
        message.contains("refused; the installed lists are unchanged"),
        "{name}: {message}"
    );
}

#[test]
fn hostile_and_broken_tarballs_are_refused_and_the_lists_stay() {
    let site = Site::new("hostile");
    let good = site.write("good.tar.gz", &ut1_tarball(&format!("{OLD_ENTRY}\n")));
    let installed = site.import(&good, &[]);
    assert_ok(&installed);
    assert!(
        stdout(&installed)
            .contains("note: blacklists/jeux: a link to gambling (an alias), skipped"),
        "{}",
        stdout(&installed)
    );
    let before = site.installed();
    assert_eq!(before.1, format!("{OLD_ENTRY}\n"));

    let list = format!("{OLD_ENTRY}\n{NEW_ENTRY}\n");
    let big = "x.test\n".repeat(1000);
    let mut truncated = ut1_tarball(&list);
    truncated.truncate(truncated.len() / 2);
    let mut corrupt = ut1_tarball(&list);
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x5a;
    let cases: Vec<(&str, Vec<u8>, &[&str], &str)> = vec![
        (
            "traversal",
            tarball(&[
                file("blacklists/gambling/domains", list.as_bytes()),
                file("blacklists/../../../tmp/evil", b"owned\n"),
            ]),
            &[],
            "tar entry blacklists/../../../tmp/evil: a path with `..`",
        ),
        (
            "absolute",
            tarball(&[
                file("/etc/cron.d/evil", b"* * * * * root sh\n"),
                file("blacklists/gambling/domains", list.as_bytes()),
            ]),
            &[],
            "tar entry /etc/cron.d/evil: an absolute path",
        ),
        (
            "symlink-out",
            tarball(&[
                Entry {
                    name: "blacklists/gambling",
                    kind: EntryType::Symlink,
                    data: b"",
                    link: "/etc",
                },
                file("blacklists/gambling/domains", list.as_bytes()),
            ]),
            &[],
            "tar entry blacklists/gambling is a link to /etc, outside its directory",
        ),
        (
            "device",
            tarball(&[
                file("blacklists/gambling/domains", list.as_bytes()),
                Entry {
                    name: "blacklists/gambling/null",
                    kind: EntryType::Char,
                    data: b"",
                    link: "",
                },
            ]),
            &[],
            "tar entry blacklists/gambling/null is a device or FIFO",
        ),
        (
            "public-suffix",
            ut1_tarball(&format!("{OLD_ENTRY}\n# UK sites\nco.uk\n")),
            &[],
            "blacklists/gambling/domains, line 3: `co.uk` is a public suffix",
        ),
        (
            "bom",
            ut1_tarball(&format!("\u{feff}{NEW_ENTRY}\n")),
            &[],
            "blacklists/gambling/domains, line 1: a byte order mark",
        ),
        (
            "latin1",
            tarball(&[file("blacklists/gambling/domains", b"caf\xe9.test\n")]),
            &[],
            "blacklists/gambling/domains, line 1: not UTF-8 (byte 0xe9",
        ),
        ("truncated", truncated, &[], "(truncated or corrupt?)"),
        ("corrupt", corrupt, &[], "(truncated or corrupt?)"),
        (
            "too-large",
            tarball(&[file("blacklists/gambling/domains", big.as_bytes())]),
            &["--max-list-size", "4096"],
            "tar entry blacklists/gambling/domains is 7000 bytes, over the limit of 4096 per file",
        ),
        (
            "missing-list",
            tarball(&[file("blacklists/adult/domains", list.as_bytes())]),
            &[],
            "the policy's categories.gambling.lists[0] reads",
        ),
    ];
    for (name, bytes, extra, expected) in cases {
        let path = site.write(&format!("{name}.tar.gz"), &bytes);
        assert_refused(name, &site.import(&path, extra), expected);
        assert_eq!(
            site.installed(),
            before,
            "{name}: the lists in force changed"
        );
        let versions: Vec<_> = std::fs::read_dir(site.dir.join("ut1.versions"))
            .unwrap()
            .collect();
        assert_eq!(
            versions.len(),
            1,
            "{name}: a staged copy was left: {versions:?}"
        );
    }
    assert!(
        !Path::new("/tmp/evil").exists() && !site.dir.join("tmp/evil").exists(),
        "the traversal wrote its file"
    );
}

#[test]
fn shallalist_tarballs_and_plain_tars_are_read() {
    let site = Site::new("shallalist");
    // Shallalist's layout, gzip: gambling (the policy's) and adult (asked for).
    let shalla = tarball(&[
        file("BL/gambling/domains", format!("{OLD_ENTRY}\n").as_bytes()),
        file("BL/adult/domains", b"adult.test\n"),
        file("BL/global_usage", b"usage notes\n"),
    ]);
    let path = site.write("shallalist.tar.gz", &shalla);
    let imported = site.import(&path, &["--category", "adult"]);
    assert_ok(&imported);
    assert_eq!(site.installed().1, format!("{OLD_ENTRY}\n"));
    assert!(site.lists_dir().join("adult/domains").is_file());

    // The same lists as a plain (uncompressed) tar: the gzip layer is optional.
    let plain = {
        let gzipped = ut1_tarball(&format!("{NEW_ENTRY}\n"));
        let mut decoder = flate2::read::GzDecoder::new(&gzipped[..]);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut bytes).unwrap();
        bytes
    };
    let path = site.write("plain.tar", &plain);
    let imported = site.import(&path, &[]);
    assert_ok(&imported);
    assert_eq!(site.installed().1, format!("{NEW_ENTRY}\n"));
    assert!(
        stdout(&imported).contains("removed"),
        "adult was not taken this time: {}",
        stdout(&imported)
    );

    // A list asked for that the source lacks refuses the import.
    assert_refused(
        "weapons",
        &site.import(&path, &["--category", "weapons"]),
        "--category weapons: the source has no such list (it has: agressif, gambling)",
    );
}

/// Serves fixed bodies by path, from threads inside a lab namespace; stops when dropped.
struct FileServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    fn start(netns: &str, addr: SocketAddr, files: Vec<(String, Vec<u8>)>) -> Self {
        let listener = classifier_user::netns::run_in(netns, move || {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .expect("the tarball server listens");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &files),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(stream: std::net::TcpStream, files: &[(String, Vec<u8>)]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    let _ = reader.read_line(&mut request);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    let mut stream = &stream;
    match files.iter().find(|(name, _)| name == path) {
        // Under /unannounced/ the length is not said: the body ends when the connection
        // does, and only counting the bytes finds it too large.
        Some((_, body)) if path.starts_with("/unannounced/") => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(body);
        }
        Some((_, body)) => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
        None => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a plain HTTP request from `client` for `name` fails (blocked) rather than
/// being answered.
fn http_blocked(client: &Host, name: &str) -> bool {
    let output = Lab::command(client, "curl")
        .args([
            "--silent",
            "--ipv4",
            "--max-time",
            "3",
            "--output",
            "/dev/null",
        ])
        .arg(format!("http://{name}/bytes/1000"))
        .output()
        .expect("curl runs");
    !output.status.success()
}

#[test]
fn a_list_imported_from_a_url_blocks_its_sites_for_real_clients_and_rollback_undoes_it() {
    if !privileged("a_list_imported_from_a_url_blocks_its_sites_for_real_clients") {
        return;
    }
    let site = Site::new("lab");
    let lab = Lab::up(&LabSpec {
        server_names: vec![NEW_SITE.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _http = HttpServer::start(&lab.server.netns, &[SocketAddr::new(SERVICE_V4.into(), 80)])
        .expect("the lab's HTTP server starts");
    let client = &lab.clients[0];

    // Lists in place before the daemon starts: imported from an unpacked directory.
    let first = site.dir.join("first/blacklists/gambling");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("domains"), format!("{OLD_ENTRY}\n")).unwrap();
    assert_ok(&site.import(&site.dir.join("first"), &[]));
    let (first_version, _) = site.installed();

    let daemon = DaemonProcess::start(
        &classifier_bin(),
        &lab,
        &DaemonOptions {
            extra_args: vec!["--policy".into(), site.policy().display().to_string()],
            ..DaemonOptions::default()
        },
    )
    .expect("the daemon starts");
    let domains_before = daemon.status().unwrap().domains;
    assert!(!http_blocked(client, NEW_SITE), "not listed yet: allowed");

    let big: String = (0..2000).map(|i| format!("site-{i}.test\n")).collect();
    let hostile = tarball(&[
        file(
            "blacklists/gambling/domains",
            format!("{NEW_ENTRY}\n").as_bytes(),
        ),
        file("blacklists/../../../../etc/evil", b"owned\n"),
    ]);
    let _tarballs = FileServer::start(
        &lab.server.netns,
        SocketAddr::new(SERVICE_V4.into(), TARBALL_PORT),
        vec![
            (
                "/blacklists.tar.gz".into(),
                ut1_tarball(&format!("{OLD_ENTRY}\n{NEW_ENTRY}\n")),
            ),
            ("/hostile.tar.gz".into(), hostile),
            ("/big.tar.gz".into(), ut1_tarball(&big)),
            ("/unannounced/big.tar.gz".into(), ut1_tarball(&big)),
        ],
    );
    let url = |name: &str| format!("http://{SERVICE_V4}:{TARBALL_PORT}/{name}");
    let import_from_gateway = |url: &str, extra: &[&str]| {
        let mut args = vec!["import", url];
        args.extend(extra);
        site.lists_command(
            Lab::command(&lab.gateway, classifier_bin().to_str().unwrap()),
            &args,
            &daemon.control_socket,
        )
    };

    // Refused downloads change nothing, in the files or in the daemon.
    for (name, extra, expected) in [
        ("hostile.tar.gz", &[][..], "a path with `..`"),
        (
            "big.tar.gz",
            &["--max-download", "1000"][..],
            "over the download limit of 1000",
        ),
        (
            "unannounced/big.tar.gz",
            &["--max-download", "1000"][..],
            "over the download limit of 1000",
        ),
        ("missing.tar.gz", &[][..], "404"),
    ] {
        assert_refused(name, &import_from_gateway(&url(name), extra), expected);
        assert_eq!(site.installed().0, first_version, "{name}");
    }
    assert!(
        !http_blocked(client, NEW_SITE),
        "still allowed after the refusals"
    );

    let imported = import_from_gateway(&url("blacklists.tar.gz"), &[]);
    assert_ok(&imported);
    let report = stdout(&imported);
    assert!(
        report
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["gambling", "1", "2", "+1"]),
        "entries before and after: {report}"
    );
    assert!(report.contains("the daemon reloaded"), "{report}");
    assert!(
        stderr(&imported).contains("downloading: "),
        "progress: {}",
        stderr(&imported)
    );
    assert_eq!(daemon.status().unwrap().domains, domains_before + 1);
    assert!(
        http_blocked(client, NEW_SITE),
        "the imported list blocks it"
    );

    // The previous copy is kept, untouched, and rollback puts it back in force.
    let previous = site.dir.join("ut1.previous");
    assert_eq!(std::fs::read_link(&previous).unwrap(), first_version);
    assert_eq!(
        std::fs::read_to_string(previous.join("gambling/domains")).unwrap(),
        format!("{OLD_ENTRY}\n")
    );
    let rolled_back = site.lists_command(
        Command::new(classifier_bin()),
        &["rollback"],
        &daemon.control_socket,
    );
    assert_ok(&rolled_back);
    assert_eq!(site.installed().0, first_version);
    assert!(
        !http_blocked(client, NEW_SITE),
        "rolled back: allowed again"
    );
    assert_eq!(daemon.status().unwrap().domains, domains_before);
    assert!(!Path::new("/etc/evil").exists());
    drop(daemon);
}
