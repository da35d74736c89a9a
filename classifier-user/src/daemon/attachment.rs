//! The guard over what a start put on the host: whatever fails, or however the daemon
//! ends, dropping it takes the datapath off the host unless it was handed over.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::Exit;
use crate::{loader::Datapath, shaping::Shaper};

/// The datapath a start holds (and the shaper, once made): whatever fails after it was
/// loaded, dropping this takes it off the host (the shaper's qdiscs removed, the programs
/// detached, the maps unpinned), so no step of the start writes its own clean-up. Only
/// [`Attachment::finish`] with [`Exit::KeepDatapath`] leaves it attached for the next daemon.
pub struct Attachment {
    /// `None` only while lent to the running daemon's [`State`], or once finished.
    datapath: Option<Datapath>,
    shaper: Option<Shaper>,
}

impl Attachment {
    pub fn new(datapath: Datapath) -> Self {
        Self {
            datapath: Some(datapath),
            shaper: None,
        }
    }

    /// The datapath, while the start prepares it.
    pub fn datapath(&mut self) -> &mut Datapath {
        self.datapath
            .as_mut()
            .expect("the datapath is held outside `lend`..`give_back`")
    }

    pub fn set_shaper(&mut self, shaper: Shaper) {
        self.shaper = Some(shaper);
    }

    /// The datapath and shaper, for the running daemon's state; [`Attachment::give_back`]
    /// returns them once it has stopped.
    pub fn lend(&mut self) -> (Datapath, Shaper) {
        let datapath = self
            .datapath
            .take()
            .expect("the datapath is not lent twice");
        let shaper = self
            .shaper
            .take()
            .expect("the shaper is made before the state");
        (datapath, shaper)
    }

    pub fn give_back(&mut self, datapath: Datapath, shaper: Shaper) {
        self.datapath = Some(datapath);
        self.shaper = Some(shaper);
    }

    /// How the daemon ended: handed over, the datapath stays attached and enforcing (only
    /// our descriptors close); otherwise it is taken off the host, and an error doing so is
    /// the answer if the daemon itself ended well.
    pub fn finish(mut self, outcome: anyhow::Result<Exit>, pin_dir: &Path) -> anyhow::Result<()> {
        match outcome {
            Ok(Exit::KeepDatapath) => {
                // Dropped without `stop`: the pinned attachments, maps and qdiscs stay.
                self.shaper = None;
                self.datapath = None;
                info!(
                    pin_dir = %pin_dir.display(),
                    "exited leaving the datapath attached and enforcing: the next `classifier \
                     run` takes it over"
                );
                Ok(())
            }
            outcome => {
                let detached = self.detach();
                if outcome.is_ok() && detached.is_ok() {
                    info!(pin_dir = %pin_dir.display(), "programs detached, maps unpinned");
                }
                outcome.map(drop).and(detached)
            }
        }
    }

    /// Stops shaping, detaches the programs and unpins the maps (once).
    fn detach(&mut self) -> anyhow::Result<()> {
        if let Some(mut shaper) = self.shaper.take() {
            shaper.stop();
        }
        match self.datapath.take() {
            Some(datapath) => datapath.shutdown(),
            None => Ok(()),
        }
    }
}

impl Drop for Attachment {
    /// A start that failed: its error is the one reported, so a failure to detach is only
    /// logged.
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            warn!(error = %format!("{e:#}"), "could not take the datapath off the host");
        }
    }
}

/// A file this daemon made, removed when it exits however it exits.
pub(super) struct RemovedAtExit(pub(super) PathBuf);

impl Drop for RemovedAtExit {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
