//! The daemon's control socket: a Unix socket where `classifier flows` and `classifier
//! status` ask the running daemon. One JSON request line in, JSON lines out.
//!
//! Only root and members of the `classifier` group may connect: the socket is mode 0660,
//! group `classifier` when that group exists, and the daemon checks each peer's
//! credentials. The socket's directory is made (0750, group `classifier`) only when it does
//! not exist; an existing one (`/run`, `/tmp`) is never changed, since other programs
//! depend on its mode and owner.
//!
//! Every connection is bounded, so that a stuck or hostile client cannot hold the daemon:
//! one request line of at most [`MAX_REQUEST_BYTES`], sent within [`REQUEST_TIMEOUT`]; each
//! write of the answer taken by the client within [`WRITE_TIMEOUT`]; at most
//! [`MAX_CONNECTIONS`] at once (more are refused with a message, at once); at most
//! [`FLOW_ANSWERS_AT_ONCE`] flow tables made at once (the next waits its turn up to
//! [`FLOWS_TURN_TIMEOUT`]).

use std::{
    io::{BufRead as _, BufReader, ErrorKind, Write as _},
    os::{
        fd::AsFd as _,
        unix::{
            fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
            net::UnixStream as StdUnixStream,
        },
    },
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _};
use tracing::warn;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/classifier/control.sock";
/// The group whose members may use the socket besides root.
pub const ADMIN_GROUP: &str = "classifier";

/// The longest request line. The longest request there is, `explain` with a 253-byte name,
/// is under 400 bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// How long a client has, once connected, to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write of an answer may wait for the client to read: a client that stops
/// reading is dropped. Not a bound on the whole answer, which for a full flow table
/// (256 Ki flows, ~120 MB of JSON) is made and sent a chunk at a time for as long as the
/// client keeps reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// `flows` answers made at once; more wait their turn. Each holds a copy of the flow
/// table's entries (up to ~40 MB for a full table) while its client reads.
pub const FLOW_ANSWERS_AT_ONCE: usize = 2;
/// How long a `flows` request waits for its turn before it is answered busy.
pub const FLOWS_TURN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client waits for the daemon's next line: longer than the daemon ever pauses
/// (a `flows` request waiting its turn), so a silence this long means it is stuck.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; one more is answered [`BUSY`] and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// What a connection beyond [`MAX_CONNECTIONS`] is told.
pub const BUSY: &str = "busy: 16 control connections are open; try again";

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Every flow: one `FlowRecord` per line, largest first.
    Flows,
    /// One `Status` object.
    Status,
    /// Read the policy file again: one `ReloadReport`, or an error naming file, line and
    /// field (the running policy stays).
    Reload,
    /// The policy in force: one `policy::show::Summary`.
    ShowPolicy,
    /// What the policy in force does with `client` reaching `target` (a name or a port) at
    /// `at`: one `policy::show::Explanation`.
    Explain {
        client: std::net::IpAddr,
        target: String,
        at: jiff::Timestamp,
        /// The client's VLAN, if asked about one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
}

/// A refusal or failure, as the one line of a response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

impl ErrorReply {
    /// The reply as the one line it is sent as.
    pub fn line(error: impl std::fmt::Display) -> String {
        let reply = Self {
            error: error.to_string(),
        };
        // A struct of one string always serialises.
        format!("{}\n", serde_json::to_string(&reply).unwrap_or_default())
    }
}

/// Why no request was read from a connection.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("request line longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong,
    #[error("no request line within {}s", .0.as_secs())]
    TooSlow(Duration),
    #[error("the connection closed before a request line")]
    Closed,
    #[error("bad request: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request line of at most `limit` bytes (the newline included) from `read`,
/// within `within`. A line cut short by the end of the stream counts, as long as it fits.
pub async fn read_request<R: AsyncRead + Unpin>(
    read: R,
    limit: usize,
    within: Duration,
) -> Result<Request, BadRequest> {
    let mut reader = tokio::io::BufReader::new(read.take(limit as u64 + 1));
    let mut line = Vec::new();
    match tokio::time::timeout(within, reader.read_until(b'\n', &mut line)).await {
        Err(_) => return Err(BadRequest::TooSlow(within)),
        Ok(read) => read?,
    };
    if line.len() > limit {
        return Err(BadRequest::TooLong);
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(BadRequest::Closed);
    }
    Ok(serde_json::from_slice(&line)?)
}

/// Creates the socket (and its directory, when there is none), replacing a stale socket
/// left by a killed daemon, and refusing to take over one a running daemon answers on.
pub fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        own_directory(dir)?;
    }
    remove_stale(path)?;
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some(gid) = admin_gid() {
        let given = nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            None,
            Some(gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        warn_unless_given(path, given);
    }
    Ok(listener)
}

/// Makes `dir`, the socket's directory, when it does not exist: mode 0750, group
/// `classifier` (when that group exists). Only that one directory is made, never its
/// parents, and an existing directory is left exactly as it is.
fn own_directory(dir: &Path) -> anyhow::Result<()> {
    use nix::{fcntl::OFlag, sys::stat::Mode};
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o750).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let meta =
                std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
            if !meta.is_dir() {
                bail!(
                    "{} is not a directory: choose another --control-socket",
                    dir.display()
                );
            }
            let mode = meta.mode();
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                warn!(
                    directory = %dir.display(),
                    "the control socket's directory is writable by anyone and not sticky: \
                     another user could replace the socket; give it a directory of its own"
                );
            }
            return Ok(());
        }
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "{} cannot be made: its parent directory does not exist (the daemon makes the \
             control socket's own directory, no others)",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    // Ours: set through a descriptor of the directory just made (never a path a symbolic
    // link could have replaced meanwhile), since the umask may have narrowed the mode.
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", dir.display()))?;
    nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(0o750))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    if let Some(gid) = admin_gid() {
        warn_unless_given(dir, nix::unistd::fchown(fd.as_fd(), None, Some(gid)));
    }
    Ok(())
}

/// Says so when `path` could not be given to the admin group: only root can then use the
/// socket. Not fatal: the datapath does not depend on it.
fn warn_unless_given(path: &Path, given: nix::Result<()>) {
    if let Err(e) = given {
        warn!(
            path = %path.display(),
            error = %e,
            "could not give the control socket to the `{ADMIN_GROUP}` group (the daemon needs \
             CAP_CHOWN for it): only root can use `classifier status` and `flows`"
        );
    }
}

/// Removes the socket a killed daemon left at `path`; anything else there is refused, not
/// removed.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket: remove it, or choose another --control-socket",
            path.display()
        );
    }
    refuse_if_answered(path)?;
    std::fs::remove_file(path)
        .with_context(|| format!("removing the stale socket {}", path.display()))
}

/// The admin group's id, when the group exists.
fn admin_gid() -> Option<nix::unistd::Gid> {
    nix::unistd::Group::from_name(ADMIN_GROUP)
        .ok()
        .flatten()
        .map(|group| group.gid)
}

/// Fails when a daemon answers on `path`: a second one must not take over its datapath.
pub fn refuse_if_answered(path: &Path) -> anyhow::Result<()> {
    if StdUnixStream::connect(path).is_ok() {
        bail!(
            "another classifier daemon answers on {}: stop it first (`systemctl stop \
             classifier`), or give this one its own --control-socket and --pin-dir",
            path.display()
        );
    }
    Ok(())
}

/// Whether the peer may talk to us: root, or a member of the admin group, as its primary
/// group or (the usual way, `usermod -aG classifier NAME`) a supplementary one. The
/// socket's credentials carry only the primary group, so membership is read from the
/// group database.
pub fn peer_allowed(uid: u32, gid: u32) -> bool {
    let group = nix::unistd::Group::from_name(ADMIN_GROUP).ok().flatten();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    allowed(
        uid,
        gid,
        group.as_ref().map(|g| (g.gid.as_raw(), g.mem.as_slice())),
        user.as_ref().map(|u| u.name.as_str()),
    )
}

/// [`peer_allowed`] on what the databases said: the admin group's id and members (if the
/// group exists) and the peer's user name (if it has one).
fn allowed(uid: u32, gid: u32, group: Option<(u32, &[String])>, user: Option<&str>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some((group_id, members)) = group else {
        return false;
    };
    gid == group_id || user.is_some_and(|name| members.iter().any(|m| m == name))
}

/// Whether something listens on `path`: false when there is no socket, or only the stale
/// one of a daemon that was killed.
pub fn daemon_listens(path: &Path) -> bool {
    match StdUnixStream::connect(path) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused),
    }
}

/// Sends `request` to the daemon at `path` and returns its response lines.
pub fn ask(path: &Path, request: &Request) -> anyhow::Result<Vec<String>> {
    let mut stream = StdUnixStream::connect(path).with_context(|| {
        format!(
            "no classifier daemon answers on {}: is `classifier run` running (with this \
             --control-socket)? Reading it needs root or the `{ADMIN_GROUP}` group",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut request_line = serde_json::to_vec(request)?;
    request_line.push(b'\n');
    // A daemon that refuses the connection (busy) may close it before the request is
    // written: its answer says why, so it is read even when the write failed.
    let sent = stream.write_all(&request_line);
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) if sent.is_err() && lines.is_empty() => {
                return Err(e).context("sending the request to the daemon");
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => bail!(
                "the daemon on {} sent nothing for {}s: it is stuck, or overloaded",
                path.display(),
                CLIENT_TIMEOUT.as_secs()
            ),
            Err(e) => return Err(e).context("reading the daemon's answer"),
        };
        if let Ok(error) = serde_json::from_str::<ErrorReply>(&line) {
            bail!("the daemon refused: {}", error.error);
        }
        lines.push(line);
    }
    sent.context("sending the request to the daemon")?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncWriteExt as _;

    use super::{BadRequest, MAX_REQUEST_BYTES, Request, allowed, read_request};

    /// `read_request` on what a client writes (then keeps the connection open, silent).
    async fn read_after(written: &[u8], within: Duration) -> Result<Request, BadRequest> {
        let (mut client, server) = tokio::net::UnixStream::pair().unwrap();
        client.write_all(written).await.unwrap();
        let read = read_request(server, MAX_REQUEST_BYTES, within).await;
        drop(client);
        read
    }

    #[tokio::test]
    async fn a_request_line_is_read() {
        let read = read_after(b"{\"command\":\"status\"}\n", Duration::from_secs(5)).await;
        assert_eq!(read.unwrap(), Request::Status);
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_refused_without_reading_it_all() {
        let mut long = vec![b' '; MAX_REQUEST_BYTES + 1];
        long.extend_from_slice(b"{\"command\":\"status\"}\n");
        let read = read_after(&long, Duration::from_secs(5)).await;
        assert!(matches!(read, Err(BadRequest::TooLong)), "{read:?}");
        // Exactly at the limit, the newline included: read.
        let mut fits = vec![b' '; MAX_REQUEST_BYTES - 21];
        fits.extend_from_slice(b"{\"command\":\"status\"}\n");
        assert_eq!(fits.len(), MAX_REQUEST_BYTES);
        assert_eq!(
            read_after(&fits, Duration::from_secs(5)).await.unwrap(),
            Request::Status
        );
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_or_half_a_line_is_given_up_on() {
        for written in [&b""[..], b"{\"command\":"] {
            let started = Instant::now();
            let read = read_after(written, Duration::from_millis(200)).await;
            assert!(matches!(read, Err(BadRequest::TooSlow(_))), "{read:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }

    #[tokio::test]
    async fn garbage_and_an_empty_connection_are_refused() {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        drop(client);
        let read = read_request(server, MAX_REQUEST_BYTES, Duration::from_secs(5)).await;
        assert!(matches!(read, Err(BadRequest::Closed)), "{read:?}");
        let read = read_after(b"GET / HTTP/1.1\r\n", Duration::from_secs(5)).await;
        assert!(matches!(read, Err(BadRequest::Invalid(_))), "{read:?}");
    }

    #[test]
    fn root_and_members_of_the_admin_group_are_allowed() {
        let members = ["alice".to_owned(), "bob".to_owned()];
        let group = Some((990, &members[..]));
        assert!(
            allowed(0, 0, None, Some("root")),
            "root, even without the group"
        );
        assert!(allowed(1000, 990, group, Some("carol")), "primary group");
        assert!(
            allowed(1001, 100, group, Some("bob")),
            "supplementary group"
        );
        assert!(!allowed(1002, 100, group, Some("mallory")));
        assert!(
            !allowed(1003, 100, group, None),
            "no user name, not the primary group"
        );
        assert!(
            !allowed(1001, 100, None, Some("bob")),
            "no admin group: root only"
        );
    }
}
