//! `classifier run`: the daemon.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    control,
    daemon::{self, ChecksumChoice, Daemon, FailFastChoice, Reporting},
    loader::{DEFAULT_PIN_DIR, DatapathChoice, TcAttachChoice, XdpModeChoice},
    policy::{ExceptionsChoice, PolicySources},
    store,
};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier run --iface eth1
  classifier run --iface eth1 --wan eth0 --policy /etc/classifier/policy.toml
  classifier run --iface lan0 --netns gw --print-flows --report-interval 2s")]
pub struct RunArgs {
    /// The gateway's LAN-facing interface: XDP on its ingress, TC on its egress (where
    /// downloads are shaped).
    #[arg(long, short = 'i', value_name = "IFACE", env = "CLASSIFIER_IFACE")]
    iface: String,

    /// The gateway's WAN-facing interface, where uploads are shaped (TC on its egress).
    /// Without it, shape rules slow downloads only.
    #[arg(long, value_name = "IFACE", env = "CLASSIFIER_WAN")]
    wan: Option<String>,

    /// Policy file (TOML); without it, the built-in default council policy. Check a file
    /// first with `classifier policy check FILE`.
    #[arg(long, short = 'p', value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Exceptions file kept by `classifier exceptions add|expire` (default:
    /// /etc/classifier/exceptions.toml, read when it exists). A file named here must exist.
    #[arg(long, value_name = "FILE")]
    exceptions: Option<PathBuf>,

    /// Network namespace the interface is in (as made by `ip netns add`). Only the network
    /// namespace is entered: maps are still pinned in the host's /sys/fs/bpf.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,

    /// Directory on a BPF filesystem where the maps are pinned; an existing one is re-used.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,

    /// Unix socket where `classifier flows` and `classifier status` reach the daemon.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,

    /// XDP attach mode: native (driver) is fastest; auto falls back to generic with a warning.
    #[arg(long, value_enum, default_value_t)]
    xdp_mode: XdpModeChoice,

    /// How TC programs are attached: `auto` uses TCX links where the kernel has them (6.6
    /// and later) and clsact filters over netlink where not; both outlive a restart.
    /// Programs a previous daemon left are taken over the way they were attached.
    #[arg(long, value_enum, default_value_t, env = "CLASSIFIER_TC_ATTACH")]
    tc_attach: TcAttachChoice,

    /// Which build of the BPF programs to load: `auto` takes the modern one where the
    /// kernel has all it uses (5.19 and later), the legacy one (5.15 to 5.18) where not.
    #[arg(long, value_enum, default_value_t, env = "CLASSIFIER_DATAPATH")]
    datapath: DatapathChoice,

    /// How often to log counters (and print flows with --print-flows), e.g. `10s`, `1m`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    report_interval: Duration,

    /// Print the flow table to stdout at every report.
    #[arg(long)]
    print_flows: bool,

    /// How many flows (largest first) --print-flows shows.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,

    /// The flow store: every ended flow is recorded there, and kept as long as the policy's
    /// `[records] retention` allows; `classifier export` reads it. An SQLite file, or a
    /// PostgreSQL database (`host=db user=classifier dbname=flows` or a `postgres://` URL;
    /// a password goes in ~/.pgpass or PGPASSWORD rather than here).
    #[arg(long, value_name = "FILE|POSTGRES", default_value = store::DEFAULT_STORE)]
    store: String,

    /// Record nothing: ended flows are only counted.
    #[arg(long, conflicts_with = "store")]
    no_store: bool,

    /// Where Prometheus scrapes `/metrics` (HTTP): traffic by category and group, what the
    /// policy withheld, the degradation intervals, the datapath's counters.
    #[arg(long, value_name = "ADDR:PORT", default_value = crate::metrics::prometheus::DEFAULT_LISTEN)]
    metrics: std::net::SocketAddr,

    /// Serve no metrics.
    #[arg(long)]
    no_metrics: bool,

    /// Write the daemon's PID to FILE once the datapath is attached (removed at exit).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,

    /// How TCP and UDP checksums are checked: a segment whose checksum the server would
    /// refuse names nothing (decoys are sent that way). `auto` verifies on a physical NIC,
    /// also accepts the checksum a local sender left for its NIC on a veth (a gateway in a
    /// container), and checks nothing in generic XDP mode, where GRO leaves stale ones.
    #[arg(long, value_enum, default_value_t)]
    checksums: ChecksumChoice,

    /// How fail-fast answers (a blocked connection's reset, a blocked datagram's ICMP
    /// unreachable) go back to the client. `auto` sends them with XDP_TX from a NIC in native
    /// XDP mode, and from TC (`bpf_redirect`) on a veth (a gateway in a container) or in
    /// generic XDP mode, where XDP_TX frames can wait seconds or be lost.
    #[arg(long, value_enum, default_value_t)]
    fail_fast_replies: FailFastChoice,

    /// The gateway translates the clients' addresses on the WAN interface (masquerade,
    /// SNAT): hand each upload's flow over to the WAN side in these bits of the skb mark
    /// (one contiguous run of at least 12 bits, e.g. `0x0fff0000`; the mark's other bits are
    /// left alone), so that uploads are still shaped by their rule and each record carries
    /// the translated source. Pick bits the site's own firewall rules do not use.
    #[arg(long, value_name = "MASK", requires = "wan", value_parser = parse_nat_mark_mask)]
    nat_mark_mask: Option<classifier_common::nat::NatConfig>,
}

/// `--nat-mark-mask`: hexadecimal (`0x...`) or decimal, one run of enough bits.
fn parse_nat_mark_mask(text: &str) -> Result<classifier_common::nat::NatConfig, String> {
    let trimmed = text.trim();
    let mask = match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => trimmed.parse::<u32>(),
    }
    .map_err(|e| format!("`{text}` is not a 32-bit mask (write it as 0x0fff0000): {e}"))?;
    classifier_common::nat::NatConfig::for_mask(mask)
        .map_err(|e| format!("mark mask {mask:#010x} cannot carry the NAT hand-over: {e}"))
}

pub fn execute(args: &RunArgs) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(config(args))?;
    let outcome = daemon.run_until_signal();
    daemon.finish(outcome)
}

/// The daemon's configuration from the command line.
fn config(args: &RunArgs) -> daemon::Config {
    daemon::Config {
        iface: args.iface.clone(),
        wan: args.wan.clone(),
        sources: PolicySources {
            policy: args.policy.clone(),
            exceptions: Some(ExceptionsChoice::resolve(args.exceptions.as_deref())),
        },
        netns: args.netns.clone(),
        pin_dir: args.pin_dir.clone(),
        control_socket: args.control_socket.clone(),
        xdp_mode: args.xdp_mode,
        tc_attach: args.tc_attach,
        datapath: args.datapath,
        reporting: Reporting {
            interval: args.report_interval,
            print_flows: args.print_flows,
            top: args.top,
        },
        store: (!args.no_store).then(|| args.store.clone()),
        metrics: (!args.no_metrics).then_some(args.metrics),
        pid_file: args.pid_file.clone(),
        checksums: args.checksums,
        fail_fast_replies: args.fail_fast_replies,
        nat: args.nat_mark_mask,
    }
}

#[cfg(test)]
mod nat_mask_tests {
    use super::parse_nat_mark_mask;

    #[test]
    fn a_nat_mark_mask_is_hex_or_decimal_one_run_of_enough_bits() {
        assert_eq!(parse_nat_mark_mask("0x0fff0000").unwrap().mark_shift, 16);
        assert_eq!(parse_nat_mark_mask(" 0XFFFF ").unwrap().slots, 0xffff);
        assert_eq!(parse_nat_mark_mask("65535").unwrap().mark_mask, 0xffff);
        for (text, says) in [
            ("0x0f0f0000", "contiguous"),
            ("0xff", "at least 12"),
            ("0", "at least 12"),
            ("0x1_0000_0000", "not a 32-bit mask"),
            ("0x100000000", "not a 32-bit mask"),
            ("mask", "not a 32-bit mask"),
            ("-1", "not a 32-bit mask"),
        ] {
            let err = parse_nat_mark_mask(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
