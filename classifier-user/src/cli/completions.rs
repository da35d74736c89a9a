//! `classifier completions` and the hidden `classifier man-pages`: the command line's own
//! definition, rendered for shells and for man(1). `cargo xtask deb` ships both.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier completions bash > /etc/bash_completion.d/classifier
  classifier completions zsh > /usr/local/share/zsh/site-functions/_classifier
  classifier completions fish > ~/.config/fish/completions/classifier.fish

The Debian package installs the bash, zsh and fish completions already.")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// Directory to write classifier.1, classifier-run.1, ... into (created if missing).
    dir: PathBuf,
}

pub fn execute(args: &CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    use std::io::Write as _;
    // Into a buffer first: clap_complete panics when its writer fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "classifier", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completions")
        }
        _ => Ok(()),
    }
}

/// One page per subcommand, nested ones too (`classifier-policy-reload.1`); hidden ones
/// (this one) have none.
pub fn man_pages(args: &ManPagesArgs, command: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(command, &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_for_every_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("classifier-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        man_pages(&ManPagesArgs { dir: dir.clone() }, super::super::command()).unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        for page in [
            "classifier.1",
            "classifier-run.1",
            "classifier-stop.1",
            "classifier-status.1",
            "classifier-policy.1",
            "classifier-policy-reload.1",
            "classifier-completions.1",
        ] {
            assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
        }
        assert!(
            !pages.iter().any(|p| p.contains("man-pages")),
            "hidden: {pages:?}"
        );
        let run = std::fs::read_to_string(dir.join("classifier-run.1")).unwrap();
        assert!(run.starts_with(".ie \\n(.g .ds Aq"), "roff: {}", &run[..80]);
        assert!(run.contains("\\-\\-iface"), "options documented");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
