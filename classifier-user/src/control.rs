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
    /// What the policy in force does with `client` reaching `target` (a name or a port) at
    /// `at`: one `policy::show::Explanation`.
    Explain {
        client: std::net::IpAddr,
        target: String,
        at: jiff::Timestamp,
    },
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
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ),
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

#[cfg(test)]
mod tests {
    use super::allowed;

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
