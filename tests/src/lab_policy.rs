//! A policy file for one lab's daemon: written where `classifier run --policy` reads it,
//! rewritten for a reload, and removed when the test ends, also on failure.

use std::path::{Path, PathBuf};

use classifier_lab::Lab;

pub struct LabPolicy {
    path: PathBuf,
}

impl LabPolicy {
    /// `text` as the policy of `lab`'s daemon.
    pub fn write(lab: &Lab, text: &str) -> Self {
        let policy = Self {
            path: std::env::temp_dir().join(format!("classifier-policy-{}.toml", lab.id)),
        };
        policy.rewrite(text);
        policy
    }

    /// Replaces the policy's text (a reload then reads it).
    pub fn rewrite(&self, text: &str) {
        std::fs::write(&self.path, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.path.display()));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `--policy FILE`, for `classifier run`'s extra arguments.
    pub fn args(&self) -> Vec<String> {
        vec!["--policy".into(), self.path.display().to_string()]
    }
}

impl Drop for LabPolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
