//! The two ways TC programs go on an interface, for tests that run on both: TCX links
//! (kernel 6.6 and later) and clsact filters made over netlink (what older kernels need;
//! `--tc-attach netlink` forces it here). And what `tc` itself sees on the gateway.

use std::process::Command;

use aya::programs::{SchedClassifier, TcAttachType};
use classifier_lab::Lab;
use classifier_user::netns;

/// How TC programs are attached (`--tc-attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAttach {
    Tcx,
    Netlink,
}

impl TcAttach {
    /// The way's name, as `--tc-attach` and `classifier status` say it.
    pub fn name(self) -> &'static str {
        match self {
            TcAttach::Tcx => "tcx",
            TcAttach::Netlink => "netlink",
        }
    }

    /// `classifier run` arguments forcing this way.
    pub fn args(self) -> Vec<String> {
        vec!["--tc-attach".into(), self.name().into()]
    }

    /// The name of the pin an attachment of `hook` (`ingress`, `egress`) leaves in the
    /// interface's link directory.
    pub fn pin_name(self, hook: &str) -> String {
        match self {
            TcAttach::Tcx => format!("tc-{hook}"),
            TcAttach::Netlink => format!("tc-{hook}-netlink"),
        }
    }
}

/// `tc filter show` of `iface`'s clsact `hook` (`ingress`, `egress`) in the gateway's
/// namespace: empty when there is no clsact qdisc.
pub fn clsact_filters(lab: &Lab, iface: &str, hook: &str) -> String {
    tc(lab, &["filter", "show", "dev", iface, hook])
}

/// Whether `iface` in the gateway's namespace has a clsact qdisc.
pub fn has_clsact(lab: &Lab, iface: &str) -> bool {
    tc(lab, &["qdisc", "show", "dev", iface]).contains("qdisc clsact")
}

fn tc(lab: &Lab, args: &[&str]) -> String {
    let output = Command::new("tc")
        .args(["-n", &lab.gateway.netns])
        .args(args)
        .output()
        .expect("tc runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The names of the TC programs on the gateway's `iface`, as `hook:name`, whichever way
/// they were attached: TCX links (which `bpftool net` of this distribution does not list)
/// and clsact filters.
pub fn gateway_tc_programs(lab: &Lab, iface: &'static str) -> String {
    let mut names = netns::run_in(&lab.gateway.netns, move || {
        let mut names = Vec::new();
        // A kernel without TCX (before 6.6) refuses the query itself: it has no TCX links.
        if !classifier_user::kernel_features::has_tcx() {
            return Ok(names);
        }
        for (hook, attach_type) in [
            ("ingress", TcAttachType::Ingress),
            ("egress", TcAttachType::Egress),
        ] {
            let (_, programs) = SchedClassifier::query_tcx(iface, attach_type)?;
            for program in programs {
                let name = program.name_as_str().unwrap_or("?").to_owned();
                names.push(format!("{hook}:{name}"));
            }
        }
        Ok(names)
    })
    .expect("querying the gateway's TCX links");
    for hook in ["ingress", "egress"] {
        let filters = clsact_filters(lab, iface, hook);
        // "filter protocol all pref 1 bpf chain 0 handle 0xc1a5 lan_egress direct-action ..."
        for line in filters.lines().filter(|l| l.contains(" handle ")) {
            if let Some(name) = line
                .split_whitespace()
                .skip_while(|w| *w != "handle")
                .nth(2)
            {
                names.push(format!("{hook}:{name}"));
            }
        }
    }
    names.join(" ")
}
