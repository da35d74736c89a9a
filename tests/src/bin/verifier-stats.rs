//! How hard the verifier works on each program: instructions processed (the kernel's limit
//! is 1,000,000) and the size after loading. On a refusal, the end of the verifier's log.
//!
//! `cargo run -p classifier-tests --bin verifier-stats [OBJECT]`: the embedded object, or the
//! BPF object file named (e.g. a legacy build in `target/bpf`, or inside a VM of an older
//! kernel). Every program is tried, whatever the ones before it did.

use aya::EbpfLoader;
use classifier_common::programs;
use classifier_user::loader::{EBPF_OBJECT, load_program};

fn main() -> anyhow::Result<()> {
    let named = std::env::args_os().nth(1).map(std::fs::read).transpose()?;
    let object = match &named {
        Some(bytes) => bytes.as_slice(),
        None => EBPF_OBJECT,
    };
    let mut ebpf = EbpfLoader::new().load(object)?;
    for spec in programs::ALL {
        let name = spec.name;
        let loaded = load_program(&mut ebpf, spec)
            .map(|()| ebpf.program(name).expect("loaded just now").info());
        match loaded {
            Ok(info) => {
                let info = info?;
                println!(
                    "{name:<16} verified {:>8} insns, {:>6} insns loaded",
                    info.verified_instruction_count().unwrap_or(0),
                    info.size_translated().unwrap_or(0) / 8
                );
            }
            Err(e) => {
                let text = format!("{e:#}");
                // The log's lines, whether the error quotes them escaped or not.
                let tail: Vec<&str> = text.split("\\n").flat_map(str::lines).collect();
                println!("{name:<16} REFUSED:");
                for line in &tail[tail.len().saturating_sub(log_lines())..] {
                    println!("    {line}");
                }
            }
        }
    }
    Ok(())
}

/// Lines of a refused program's verifier log to print (`VERIFIER_LOG_LINES`, default 12).
fn log_lines() -> usize {
    std::env::var("VERIFIER_LOG_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12)
}
