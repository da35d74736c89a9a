//! `classifier preflight`: what the datapath needs of this kernel, and whether it has it.

use clap::Args;

use crate::{
    kernel_features,
    loader::{self, DatapathChoice, TcAttachChoice},
    preflight,
};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier preflight
  CLASSIFIER_PRETEND_KERNEL_LACKS=bpf_loop classifier preflight   # what a 5.15 kernel gets
  classifier preflight --datapath modern                          # the modern build's needs")]
pub struct PreflightArgs {
    /// The build of the BPF programs to report on: `auto` is the one `run` would load.
    #[arg(long, value_enum, default_value_t, env = "CLASSIFIER_DATAPATH")]
    datapath: DatapathChoice,
}

/// Prints each feature the BPF object uses with the kernel that brought it and whether
/// this kernel has it, then how TC would be attached; fails when a required one is missing.
pub fn execute(args: &PreflightArgs) -> anyhow::Result<()> {
    preflight::require_capabilities("preflight", &preflight::RUN_CAPABILITIES)?;
    let build = preflight::datapath_build(args.datapath, loader::EBPF_OBJECT)?;
    let object = loader::object_of(build);
    let report = preflight::probe_kernel(object)?;
    println!("kernel {}", kernel_features::release());
    println!("BPF programs: the {build} build");
    for probed in &report {
        let state = match (probed.present, probed.required) {
            (true, _) => "yes",
            (false, true) => "MISSING",
            (false, false) => "no",
        };
        println!(
            "  {:<28} since {:<6} {state}",
            probed.name,
            probed.since.to_string()
        );
    }
    println!(
        "minimum kernel for the datapath: {}",
        kernel_features::minimum_kernel(&report)
    );
    match preflight::tc_attach_mode(TcAttachChoice::Auto)? {
        loader::TcAttachMode::Tcx => println!("TC programs: TCX links"),
        loader::TcAttachMode::Netlink => println!(
            "TC programs: clsact filters over netlink (no TCX: it needs {}+)",
            kernel_features::TCX
        ),
    }
    preflight::require_kernel_features(object)?;
    Ok(())
}
