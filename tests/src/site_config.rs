//! A private /etc/classifier for the commands of one test. Commands that read a policy
//! without a daemon read the site's /etc/classifier/policy.toml and exceptions.toml, at
//! fixed paths with no flag or variable to move them, so each command under test runs in a
//! mount namespace of its own in which /etc/classifier is a directory of the test's:
//! nothing of the machine's is read or written, and the product carries no test hook (as
//! [`crate::audit`] does for /var/lib/classifier).
//!
//! /etc/classifier may not exist on the machine, and a bind mount needs a directory to
//! cover, so /etc is first covered (in the command's namespace only) by an overlay of
//! itself with one empty `classifier` directory added; the test's directory is bound there.

use std::{
    ffi::OsStr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
};

use crate::{classifier_bin, privileged};

/// What commands see as /etc/classifier, and a scratch directory beside it; all removed at
/// the end, also on failure.
pub struct SiteConfig {
    root: PathBuf,
}

impl SiteConfig {
    /// An empty /etc/classifier (no site files). `None` (the test is skipped) without root;
    /// under CI that is a failure.
    pub fn new(test: &str) -> Option<Self> {
        if !privileged(test) {
            return None;
        }
        let root =
            std::env::temp_dir().join(format!("classifier-site-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["etc-upper/classifier", "etc-work", "etc-classifier", "work"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        Some(Self { root })
    }

    /// What the commands see as /etc/classifier.
    pub fn etc_classifier(&self) -> PathBuf {
        self.root.join("etc-classifier")
    }

    /// A directory of the test's, for files it names on the command line.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// `program`, to run with the test's /etc/classifier.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        enter_on_exec(&mut command, &self.root);
        command
    }

    /// The default policy reading GOV.UK's bank holidays for `division` from a copy of the
    /// shipped file in [`SiteConfig::work_dir`] (`bank-holidays-file`), instead of its own
    /// list of dates.
    pub fn default_policy_with_gov_uk_bank_holidays(&self, division: &str) -> String {
        std::fs::write(
            self.work_dir().join("bank-holidays.json"),
            classifier_user::policy::bank_holidays::SHIPPED,
        )
        .unwrap();
        let default = classifier_user::policy::DEFAULT_POLICY;
        let start = default.find("bank-holidays = [").unwrap();
        let end = start + default[start..].find("]\n").unwrap() + 2;
        format!(
            "{}bank-holidays-file = \"bank-holidays.json\"\nbank-holidays-division = \
             \"{division}\"\n{}",
            &default[..start],
            &default[end..]
        )
    }

    /// `classifier args...` with the test's /etc/classifier, run to its end.
    pub fn classifier(&self, args: &[&str]) -> Output {
        self.command(classifier_bin())
            .args(args)
            .output()
            .expect("classifier runs")
    }
}

impl Drop for SiteConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Makes `command` run in a mount namespace of its own where /etc/classifier is
/// `root`/etc-classifier and the rest of /etc the machine's.
fn enter_on_exec(command: &mut Command, root: &Path) {
    let overlay = format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        root.join("etc-upper").display(),
        root.join("etc-work").display()
    );
    let site = root.join("etc-classifier");
    // SAFETY: between fork and exec the closure makes system calls only, on paths and
    // options made before the fork (nix passes short ones through a buffer on the stack).
    unsafe {
        command.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some("overlay"),
                "/etc",
                Some("overlay"),
                MsFlags::empty(),
                Some(overlay.as_str()),
            )?;
            mount(
                Some(&site),
                "/etc/classifier",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        });
    }
}
