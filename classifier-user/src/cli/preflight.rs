//! `classifier preflight`: what the datapath needs of this kernel, and whether it has it.

use clap::Args;

use crate::{
    kernel_features::{self, Probed},
    loader::{self, Datapath, DatapathChoice, FellBack, TcAttachChoice},
    preflight::{self, ChosenBuild},
};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier preflight
  CLASSIFIER_PRETEND_KERNEL_LACKS=bpf_loop classifier preflight   # what a 5.15 kernel gets
  classifier preflight --datapath modern                          # the modern build's needs

The verifier check loads the programs as `run` would, with maps of their own (not pinned, \
nothing attached, all gone when preflight ends): a daemon already running is not touched, \
but the kernel holds that second set of maps (the flow state alone is about 130 MiB at the \
default sizes) for the moment of the check.")]
pub struct PreflightArgs {
    /// The build of the BPF programs to report on: `auto` is the one `run` would load.
    #[arg(long, value_enum, default_value_t, env = "CLASSIFIER_DATAPATH")]
    datapath: DatapathChoice,
}

/// Prints each feature the BPF object uses with the kernel that brought it and whether
/// this kernel has it, whether the kernel's verifier takes the build (its programs loaded
/// with private maps, nothing attached), then how TC would be attached; fails when a
/// required feature is missing or the verifier refuses the build.
pub fn execute(args: &PreflightArgs) -> anyhow::Result<()> {
    preflight::require_capabilities("preflight", &preflight::RUN_CAPABILITIES)?;
    let mut chosen = preflight::datapath_build(args.datapath, loader::object_of)?;
    println!("kernel {}", kernel_features::release());
    let features = chosen.require_features();
    let verdict = features.is_ok().then(|| verify(args.datapath, &mut chosen));
    println!("BPF programs: the {} build", chosen.build);
    print_features(&chosen.features);
    if let Some(verdict) = &verdict {
        println!("verifier: {}", verdict.said);
    }
    match preflight::tc_attach_mode(TcAttachChoice::Auto)? {
        loader::TcAttachMode::Tcx => println!("TC programs: TCX links"),
        loader::TcAttachMode::Netlink => println!(
            "TC programs: clsact filters over netlink (no TCX: it needs {}+)",
            kernel_features::TCX
        ),
    }
    features?;
    verdict.map_or(Ok(()), |verdict| verdict.result)
}

/// What the kernel's verifier made of the build: one line to print, and whether it passed.
struct Verdict {
    said: String,
    result: anyhow::Result<()>,
}

/// Loads `chosen`'s programs the way `run` would (`auto` falling back to the legacy build
/// when the verifier refuses the modern one), and makes `chosen` the build that loaded.
fn verify(choice: DatapathChoice, chosen: &mut ChosenBuild) -> Verdict {
    let build = chosen.build;
    let (said, result) = match loader::load_falling_back(choice, build, Datapath::load) {
        Ok((_, None)) => (format!("takes every program of the {build} build"), Ok(())),
        Ok((_, Some(FellBack { refused, legacy }))) => {
            *chosen = legacy;
            let said = format!(
                "refuses the modern build ({refused}: {}); takes every program of the legacy \
                 build, which `run` loads instead",
                loader::verifier_reason(&refused).unwrap_or_default()
            );
            (said, Ok(()))
        }
        Err(error) => {
            let said = match loader::verifier_reason(&error) {
                Some(reason) => format!("REFUSES the {build} build ({error}: {reason})"),
                // Not the verifier: a map the kernel could not make, say; the error says.
                None => format!("not reached: the {build} build did not load ({error:#})"),
            };
            (said, Err(error))
        }
    };
    Verdict { said, result }
}

fn print_features(report: &[Probed]) {
    for probed in report {
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
        kernel_features::minimum_kernel(report)
    );
}
