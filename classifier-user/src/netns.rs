//! Entering network namespaces made with `ip netns add` (bind-mounted under /run/netns).
//!
//! Only the network namespace changes: the mount namespace stays, so `/sys/fs/bpf` and its
//! pins remain the host's. (`ip netns exec` remounts /sys, which would hide the pins.)

use std::{fs::File, path::PathBuf};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};

/// Where `ip netns add NAME` bind-mounts the namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Moves the calling thread into the named network namespace.
///
/// Threads started afterwards by this thread inherit it, so call this before starting an
/// async runtime's worker threads.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let path = path(name);
    let file = File::open(&path).with_context(|| {
        format!(
            "network namespace `{name}` not found ({} missing): list them with `ip netns list`",
            path.display()
        )
    })?;
    setns(file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace `{name}` (needs root)"))
}

/// Runs `work` on a new thread inside the named network namespace and returns its result.
/// The caller's own namespace is untouched.
pub fn run_in<T, F>(name: &str, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter(&name)?;
        work()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in network namespace panicked"))?
}
