//! The control socket cannot hurt the host or hold the daemon: its directory is the
//! daemon's own only when the daemon made it (an existing one, such as /tmp, keeps its mode
//! and owner), a request line is bounded in size and time, connections are capped, and a
//! long answer (`flows` of a large table) does not stall `status`.

use std::{
    io::{Read as _, Write as _},
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use classifier_common::flow::{DirectionCounters, FlowEntry, FlowKey, ip_proto};
use classifier_lab::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
};
use classifier_tests::{classifier_bin, privileged};
use classifier_user::control::{
    self, MAX_CONNECTIONS, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, Request,
};

/// A directory for the test's sockets, removed at the end, also on failure.
struct Scratch(PathBuf);

impl Scratch {
    /// Made like /tmp: mode 1777, owned by nobody (so that a chown would show).
    fn like_tmp(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("classifier-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (mode with the file type, uid, gid).
fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.mode(), meta.uid(), meta.gid())
}

fn lab() -> Lab {
    Lab::up(&LabSpec {
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab comes up")
}

fn daemon_on(lab: &Lab, socket: &Path, log: &Path) -> DaemonProcess {
    DaemonProcess::start(
        &classifier_bin(),
        lab,
        &DaemonOptions {
            control_socket: Some(socket.to_owned()),
            log_file: Some(log.to_owned()),
            ..DaemonOptions::default()
        },
    )
    .expect("the daemon starts")
}

/// Everything the daemon writes on `stream` until it closes it, within `within`. A close
/// that leaves part of our request unread reaches us as a reset after its answer.
fn read_until_closed(stream: &mut UnixStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the daemon did not close the connection within {within:?}; it sent {} bytes: {:?}",
            received.len(),
            String::from_utf8_lossy(&received[..received.len().min(300)])
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the daemon's answer: {e}"),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Waits, without reading (which would make it a client that reads), until the daemon has
/// closed `stream` (POLLHUP, reported once neither side can send).
fn wait_until_dropped(stream: &UnixStream, within: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the daemon kept a stalled client for {within:?}"
        );
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
        let timeout = PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap();
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
        let events = fds[0].revents().unwrap_or(PollFlags::empty());
        if events.contains(PollFlags::POLLHUP) {
            return;
        }
    }
}

#[test]
fn an_existing_directory_keeps_its_mode_and_owner_and_a_new_one_is_the_daemons() {
    if !privileged("an_existing_directory_keeps_its_mode_and_owner") {
        return;
    }
    let tmp = Scratch::like_tmp("control-dir");
    let before = mode_and_owner(&tmp.0);
    assert_eq!(
        before,
        (0o41777, 65534, 65534),
        "the scratch directory is like /tmp"
    );
    let lab = lab();
    let log = lab.data_dir().join("daemon.log");
    std::fs::create_dir_all(lab.data_dir()).unwrap();

    // The socket right in the existing directory, as `--control-socket /tmp/c.sock` did.
    let socket = tmp.0.join("c.sock");
    let daemon = daemon_on(&lab, &socket, &log);
    assert_eq!(
        mode_and_owner(&tmp.0),
        before,
        "the existing directory is untouched"
    );
    let (socket_mode, socket_uid, _) = mode_and_owner(&socket);
    assert_eq!(
        socket_mode & 0o7777,
        0o660,
        "the socket: root and the group only"
    );
    assert_eq!(socket_uid, 0);
    let status = classifier(&["status", "--json", "--control-socket"], &socket);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        daemon.stop().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        mode_and_owner(&tmp.0),
        before,
        "and after the daemon stopped"
    );
    assert!(!socket.exists(), "the socket is removed at exit");

    // A directory that does not exist yet is made, the daemon's own: 0750.
    let own = tmp.0.join("classifier");
    let socket = own.join("c.sock");
    let daemon = daemon_on(&lab, &socket, &log);
    let (own_mode, own_uid, own_gid) = mode_and_owner(&own);
    assert_eq!(own_mode, 0o40750, "made 0750");
    assert_eq!(own_uid, 0);
    let admin = nix::unistd::Group::from_name(control::ADMIN_GROUP).unwrap();
    assert_eq!(own_gid, admin.map_or(0, |g| g.gid.as_raw()));
    assert_eq!(mode_and_owner(&tmp.0), before, "its parent is untouched");
    assert!(daemon.stop().unwrap().success());

    // A file that is not a socket is neither removed nor used.
    let not_a_socket = tmp.0.join("notes.txt");
    std::fs::write(&not_a_socket, "keep me\n").unwrap();
    let refused = DaemonProcess::start(
        &classifier_bin(),
        &lab,
        &DaemonOptions {
            control_socket: Some(not_a_socket.clone()),
            log_file: Some(log.clone()),
            ..DaemonOptions::default()
        },
    );
    let message = format!("{:#}", refused.err().expect("refused"));
    assert!(message.contains("is not a socket"), "{message}");
    assert_eq!(std::fs::read_to_string(&not_a_socket).unwrap(), "keep me\n");
    assert_eq!(mode_and_owner(&tmp.0), before);
}

fn classifier(args: &[&str], socket: &Path) -> std::process::Output {
    Command::new(classifier_bin())
        .args(args)
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn an_oversized_request_is_refused_and_a_silent_client_dropped() {
    if !privileged("an_oversized_request_is_refused_and_a_silent_client_dropped") {
        return;
    }
    let lab = lab();
    std::fs::create_dir_all(lab.data_dir()).unwrap();
    let log = lab.data_dir().join("daemon.log");
    let daemon = daemon_on(&lab, &lab.control_socket(), &log);
    let socket = &daemon.control_socket;

    // 64 KiB without a newline: refused once the limit is passed, not read to the end.
    let mut oversized = UnixStream::connect(socket).unwrap();
    oversized
        .write_all(&vec![b'x'; 64 * 1024])
        .expect("the socket buffer takes 64 KiB");
    let started = Instant::now();
    let answer = read_until_closed(&mut oversized, Duration::from_secs(3));
    assert!(
        answer.contains(&format!(
            "request line longer than {MAX_REQUEST_BYTES} bytes"
        )),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "at once");

    // Nothing sent: dropped after the request timeout, with a reason.
    let mut silent = UnixStream::connect(socket).unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut silent, REQUEST_TIMEOUT + Duration::from_secs(5));
    let waited = started.elapsed();
    assert!(answer.contains("no request line within"), "{answer}");
    assert!(
        waited >= REQUEST_TIMEOUT - Duration::from_millis(500)
            && waited < REQUEST_TIMEOUT + Duration::from_secs(3),
        "dropped after {waited:?}"
    );

    // Half a request, then silence: the same.
    let mut slow = UnixStream::connect(socket).unwrap();
    slow.write_all(b"{\"command\":").unwrap();
    let answer = read_until_closed(&mut slow, REQUEST_TIMEOUT + Duration::from_secs(5));
    assert!(answer.contains("no request line within"), "{answer}");

    // The daemon still answers.
    let status = control::ask(socket, &Request::Status).expect("status");
    assert_eq!(status.len(), 1);
    assert!(daemon.stop().unwrap().success());
}

#[test]
fn connections_beyond_the_cap_are_refused_at_once_without_holding_the_daemon() {
    if !privileged("connections_beyond_the_cap_are_refused_at_once") {
        return;
    }
    let lab = lab();
    std::fs::create_dir_all(lab.data_dir()).unwrap();
    let log = lab.data_dir().join("daemon.log");
    let daemon = daemon_on(&lab, &lab.control_socket(), &log);
    let socket = &daemon.control_socket;

    // Every slot taken by a client that says nothing.
    let mut idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut extra = UnixStream::connect(socket).unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(2));
    assert!(answer.contains(control::BUSY), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    let refused = control::ask(socket, &Request::Status).unwrap_err();
    assert!(format!("{refused:#}").contains("busy"), "{refused:#}");

    // Meanwhile the daemon's loop goes on: a SIGHUP is acted on.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("SIGHUP: reloading the policy")
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not acted on: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The silent ones are dropped after the request timeout, and the slots are free again.
    for stream in &mut idle {
        let answer = read_until_closed(stream, REQUEST_TIMEOUT + Duration::from_secs(5));
        assert!(answer.contains("no request line within"), "{answer}");
    }
    let status = control::ask(socket, &Request::Status).expect("status once slots are free");
    assert_eq!(status.len(), 1);
    assert!(daemon.stop().unwrap().success());
}

/// Flows written straight into the daemon's pinned flow table: UDP flows, live (seen now),
/// each with its own client port.
fn fill_flow_table(pin_dir: &Path, count: u32) {
    let mut table: aya::maps::HashMap<aya::maps::MapData, FlowKey, FlowEntry> =
        classifier_user::bpf_maps::from_pin(pin_dir, classifier_common::maps::FLOWS)
            .expect("the pinned flow table");
    let now = classifier_user::flows::datapath_clock_ns().unwrap();
    for i in 0..count {
        let client = std::net::Ipv4Addr::new(192, 0, 2, 10 + (i / 60_000) as u8);
        let key = FlowKey {
            client_addr: client.to_ipv6_mapped().octets(),
            server_addr: std::net::Ipv4Addr::new(203, 0, 113, 10)
                .to_ipv6_mapped()
                .octets(),
            client_port: 1024 + (i % 60_000) as u16,
            server_port: 443,
            protocol: ip_proto::UDP,
            _pad: [0; 3],
        };
        let entry = FlowEntry {
            first_seen_ns: now,
            last_seen_ns: now,
            upload: DirectionCounters {
                packets: 1,
                bytes: 100 + u64::from(i),
            },
            ..FlowEntry::default()
        };
        table.insert(key, entry, 0).expect("room in the flow table");
    }
}

/// Flows put in the table by the two tests below: a `flows` answer of ~25 MB, far more
/// than a socket's buffer takes.
const FLOWS: u32 = 60_000;

/// A lab daemon whose flow table holds [`FLOWS`] flows.
fn daemon_with_a_large_table(lab: &Lab) -> DaemonProcess {
    std::fs::create_dir_all(lab.data_dir()).unwrap();
    let log = lab.data_dir().join("daemon.log");
    let daemon = daemon_on(lab, &lab.control_socket(), &log);
    fill_flow_table(&daemon.pin_dir, FLOWS);
    daemon
}

/// How long `status` took, and the flows it counted.
fn status_of(socket: &Path) -> (Duration, usize) {
    let started = Instant::now();
    let lines = control::ask(socket, &Request::Status).expect("status");
    let status: classifier_user::daemon::Status = serde_json::from_str(&lines[0]).unwrap();
    (started.elapsed(), status.flows)
}

#[test]
fn flows_of_a_large_table_do_not_stall_status() {
    if !privileged("flows_of_a_large_table_do_not_stall_status") {
        return;
    }
    let lab = lab();
    let daemon = daemon_with_a_large_table(&lab);
    let socket = daemon.control_socket.clone();
    let (alone, flows) = status_of(&socket);
    assert!(flows >= FLOWS as usize, "the table holds {flows} flows");

    // `classifier flows`, and `status` asked over and over while it is answered.
    let reader = Command::new(classifier_bin())
        .args(["flows", "--json", "--control-socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let answered = std::thread::spawn(move || reader.wait_with_output().unwrap());
    let mut during = Vec::new();
    while !answered.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "`classifier flows` did not finish; {} status answers meanwhile",
            during.len()
        );
        during.push(status_of(&socket).0);
        std::thread::sleep(Duration::from_millis(50));
    }
    let flows_took = started.elapsed();
    let output = answered.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = output
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty());
    assert!(
        lines.count() >= FLOWS as usize,
        "every flow is in the answer"
    );
    let slowest = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "status alone {alone:?}; `flows` of {FLOWS} flows took {flows_took:?}; {} status \
         answers meanwhile, the slowest {slowest:?}",
        during.len()
    );
    // Not a timing target but the property itself: made all at once, the answer held
    // the daemon's state (and an async worker) while it was made, most of the time
    // `flows` takes, and `status` waited that long. Made a chunk at a time, `status`
    // waits one chunk at most.
    assert!(
        during.len() >= 3,
        "`flows` took {flows_took:?}: too short to ask status meanwhile"
    );
    assert!(
        slowest < flows_took / 4,
        "status took {slowest:?} while `flows` was answered in {flows_took:?}"
    );
    let log = daemon.log();
    assert!(daemon.stop().unwrap().success(), "{log}");
}

#[test]
fn clients_that_stop_reading_the_flows_are_dropped_and_others_served() {
    if !privileged("clients_that_stop_reading_the_flows_are_dropped") {
        return;
    }
    let lab = lab();
    let daemon = daemon_with_a_large_table(&lab);
    let socket = daemon.control_socket.clone();

    // As many `flows` requests as are answered at once, and one more that waits its turn,
    // none of them read.
    let mut stalled: Vec<UnixStream> = (0..=control::FLOW_ANSWERS_AT_ONCE)
        .map(|_| {
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream.write_all(b"{\"command\":\"flows\"}\n").unwrap();
            stream
        })
        .collect();
    // Meanwhile `status` is answered, and counts the whole table.
    std::thread::sleep(Duration::from_secs(1));
    assert!(status_of(&socket).1 >= FLOWS as usize);

    // Each is dropped once its answer has waited WRITE_TIMEOUT for it, having been sent
    // only part of it (what the socket's buffers took). The one beyond the turns gets its
    // turn when the first are dropped, and is dropped in turn (or is told the daemon is
    // busy, if its wait for a turn ended first).
    let limit = control::FLOWS_TURN_TIMEOUT + control::WRITE_TIMEOUT * 2 + Duration::from_secs(60);
    for (i, stream) in stalled.iter_mut().enumerate() {
        wait_until_dropped(stream, limit);
        let sent = read_until_closed(stream, Duration::from_secs(5));
        let full_answer = 400 * FLOWS as usize;
        let busy = i == control::FLOW_ANSWERS_AT_ONCE && sent.starts_with("{\"error\":\"busy:");
        assert!(
            busy || (sent.starts_with("{\"client\"") && sent.len() < full_answer),
            "stalled client {i} was sent {} bytes (the whole answer is over {full_answer}): {}",
            sent.len(),
            &sent[..sent.len().min(300)]
        );
    }

    // Their turns are free again: the whole table is answered.
    let flows = control::ask(&socket, &Request::Flows).expect("flows once the turns are free");
    assert!(flows.len() >= FLOWS as usize, "{} flows", flows.len());
    let log = daemon.log();
    assert!(daemon.stop().unwrap().success(), "{log}");
}
