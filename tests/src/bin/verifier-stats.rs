//! How hard the verifier works on each program: instructions processed (the kernel's limit
//! is 1,000,000) and the size after loading. On a refusal, the end of the verifier's log.
//!
//! `cargo run -p classifier-tests --bin verifier-stats`

use aya::{
    EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use classifier_user::loader::{EBPF_OBJECT, program};

fn main() -> anyhow::Result<()> {
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
    let tail_calls = program::TAIL_CALLS.iter().map(|(_, name)| *name);
    let names = [
        program::LAN_INGRESS,
        program::LAN_EGRESS,
        program::LAN_REPLIES,
        program::WAN_EGRESS,
        program::EMPTY_XDP,
    ];
    let tc = [
        program::LAN_EGRESS,
        program::LAN_REPLIES,
        program::WAN_EGRESS,
    ];
    for name in names.into_iter().chain(tail_calls) {
        let prog = ebpf.program_mut(name).expect("program in object");
        let loaded = if tc.contains(&name) {
            let tc: &mut SchedClassifier = prog.try_into()?;
            tc.load().map(|()| tc.info())
        } else {
            let xdp: &mut Xdp = prog.try_into()?;
            xdp.load().map(|()| xdp.info())
        };
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
                let text = format!("{e:?}");
                let tail: Vec<&str> = text.split("\\n").collect();
                println!("{name:<16} REFUSED:");
                for line in &tail[tail.len().saturating_sub(12)..] {
                    println!("    {line}");
                }
            }
        }
    }
    Ok(())
}
