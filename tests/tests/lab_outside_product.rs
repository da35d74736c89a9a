//! The lab is not part of the product. On the built binaries: `classifier --help` (what a
//! gateway has) offers no lab commands, `classifier lab ...` is refused, its man pages have no
//! lab page and it embeds one BPF object, the datapath; `classifier-lab --help` offers the
//! lab's `demo`, `up` and `down`, and the lab's BPF objects are in that binary. No root needed.

use std::process::{Command, Output};

use classifier_tests::{classifier_bin, classifier_lab_bin};

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// The subcommands a clap `--help` lists: the first word of each line under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn help_of(binary: &std::path::Path) -> String {
    let output = run(Command::new(binary).arg("--help"));
    assert!(
        output.status.success(),
        "{} --help: {output:?}",
        binary.display()
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// Where an ELF relocatable object for BPF (e_machine EM_BPF, 247) starts in `bytes`: the
/// objects `include_bytes_aligned!` put into a binary.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn embedded_bpf_objects(bytes: &[u8]) -> usize {
    const ELF64_LE: [u8; 7] = [0x7f, b'E', b'L', b'F', 2, 1, 1];
    const ET_REL: [u8; 2] = [1, 0];
    const EM_BPF: [u8; 2] = [247, 0];
    bytes
        .windows(20)
        .filter(|w| w[..7] == ELF64_LE && w[16..18] == ET_REL && w[18..20] == EM_BPF)
        .count()
}

#[test]
fn classifier_help_offers_no_lab_commands() {
    let help = help_of(&classifier_bin());
    let commands = subcommands(&help);
    assert!(
        commands.iter().any(|c| c == "run") && commands.iter().any(|c| c == "status"),
        "the product's commands are read from its help: {commands:?}\n{help}"
    );
    assert!(
        !commands.iter().any(|c| c == "lab"),
        "`classifier --help` offers lab commands: {commands:?}"
    );
    assert!(
        !help.contains("classifier lab"),
        "`classifier --help` mentions the lab: {help}"
    );
}

#[test]
fn classifier_refuses_lab_commands() {
    // Asking for help only: were the lab back in the product, this must not start a lab.
    for args in [&["lab", "--help"][..], &["lab", "demo", "--help"]] {
        let output = run(Command::new(classifier_bin()).args(args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "classifier {args:?}: {stderr}"
        );
        assert!(
            stderr.contains("unrecognized subcommand 'lab'"),
            "classifier {args:?}: {stderr}"
        );
    }
}

#[test]
fn classifier_man_pages_have_no_lab_page() {
    let dir = std::env::temp_dir().join(format!("classifier-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = run(Command::new(classifier_bin()).arg("man-pages").arg(&dir));
    assert!(output.status.success(), "man-pages: {output:?}");
    let pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("man pages written")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        pages.iter().any(|p| p == "classifier-run.1"),
        "man pages: {pages:?}"
    );
    assert!(
        !pages.iter().any(|p| p.starts_with("classifier-lab")),
        "a lab man page would be in the package: {pages:?}"
    );
}

#[test]
fn classifier_embeds_the_datapath_objects_only_and_the_lab_its_own() {
    let product = std::fs::read(classifier_bin()).unwrap();
    assert_eq!(
        embedded_bpf_objects(&product),
        2,
        "the product carries the datapath's BPF object in its two builds (modern and legacy, \
         docs/kernels.md) and nothing else"
    );
    assert!(
        !contains(&product, b"xdp_pass"),
        "the lab's pass-through program (`xdp_pass`) is in the product"
    );
    // The pass-through program `classifier-lab up` attaches to the switch port (the linker
    // keeps only the objects a binary loads, so not a count).
    let lab = std::fs::read(classifier_lab_bin()).unwrap();
    assert!(
        embedded_bpf_objects(&lab) >= 1,
        "the lab's binary embeds its pass-through object"
    );
}

#[test]
fn classifier_lab_help_offers_demo_up_and_down() {
    let help = help_of(&classifier_lab_bin());
    let commands = subcommands(&help);
    for wanted in ["demo", "up", "down"] {
        assert!(
            commands.iter().any(|c| c == wanted),
            "`classifier-lab --help` lacks {wanted}: {commands:?}\n{help}"
        );
    }
}
