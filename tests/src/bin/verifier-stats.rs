//! How hard the verifier works on each program: instructions processed (the kernel's limit
//! is 1,000,000) and the size after loading. On a refusal, the end of the verifier's log.
//!
//! `cargo run -p classifier-tests --bin verifier-stats`

use aya::EbpfLoader;
use classifier_common::programs;
use classifier_user::loader::{EBPF_OBJECT, load_program};

fn main() -> anyhow::Result<()> {
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
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
                let tail: Vec<&str> = text.lines().collect();
                println!("{name:<16} REFUSED:");
                for line in &tail[tail.len().saturating_sub(12)..] {
                    println!("    {line}");
                }
            }
        }
    }
    Ok(())
}
