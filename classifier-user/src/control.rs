//! The daemon's control socket: a Unix socket where `classifier flows` and `classifier
//! status` ask the running daemon. One JSON request line in, JSON lines out.
//!
//! Only root and members of the `classifier` group may connect: the socket is mode 0660,
//! group `classifier` when that group exists, in a directory only they can enter.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream as StdUnixStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/classifier/control.sock";
/// The group whose members may use the socket besides root.
pub const ADMIN_GROUP: &str = "classifier";

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
}

/// A refusal or failure, as the one line of a response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// Creates the socket (and its directory), replacing a stale one left by a killed daemon,
/// and refusing to take over one a running daemon answers on.
pub fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
        let _ = chown_to_admin_group(dir);
    }
    if path.exists() {
        refuse_if_answered(path)?;
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let _ = chown_to_admin_group(path);
    Ok(listener)
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

fn chown_to_admin_group(path: &Path) -> anyhow::Result<()> {
    if let Some(group) = nix::unistd::Group::from_name(ADMIN_GROUP)? {
        nix::unistd::chown(path, None, Some(group.gid))?;
    }
    Ok(())
}

/// Whether the peer may talk to us: root, or a member of the admin group.
pub fn peer_allowed(uid: u32, gid: u32) -> bool {
    if uid == 0 {
        return true;
    }
    matches!(nix::unistd::Group::from_name(ADMIN_GROUP), Ok(Some(group)) if group.gid.as_raw() == gid)
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
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    serde_json::to_writer(&mut stream, request)?;
    stream.write_all(b"\n")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.context("reading the daemon's answer")?;
        if let Ok(error) = serde_json::from_str::<ErrorReply>(&line) {
            bail!("the daemon refused: {}", error.error);
        }
        lines.push(line);
    }
    Ok(lines)
}
