//! `classifier run`: the daemon.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use classifier_common::config::fail_fast_replies;
use tracing::info;

use aya::maps::{MapData, RingBuf};

use crate::{
    control,
    daemon::{self, Attachment, Exit, Reporting, Shared, State},
    degradation::Degradation,
    events::Learned,
    in_force::InForce,
    loader::{
        self, DEFAULT_PIN_DIR, Datapath, DatapathChoice, TcAttachChoice, XdpAttachMode,
        XdpModeChoice,
    },
    netns,
    policy::{self, Policy, PolicySources},
    preflight,
    recorder::{RecentlyEnded, Recorder, RecorderStats},
    shaping::{Egress, Shaper},
    store, tables,
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

/// `--fail-fast-replies`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailFastChoice {
    /// Decided by the interface and the XDP mode.
    #[default]
    Auto,
    /// Sent back by XDP itself.
    XdpTx,
    /// Passed up marked, and sent back out of the interface by a TC ingress program.
    TcRedirect,
}

/// How fail-fast answers go out (a `config::fail_fast_replies` value) for
/// `--fail-fast-replies` on `iface` attached in `xdp_mode`, and why.
fn fail_fast_way(
    choice: FailFastChoice,
    iface: &str,
    xdp_mode: XdpAttachMode,
) -> (u8, &'static str) {
    use classifier_common::config::fail_fast_replies::{TC_REDIRECT, XDP_TX};
    match choice {
        FailFastChoice::XdpTx => (XDP_TX, "--fail-fast-replies xdp-tx"),
        FailFastChoice::TcRedirect => (TC_REDIRECT, "--fail-fast-replies tc-redirect"),
        FailFastChoice::Auto if xdp_mode == XdpAttachMode::Generic => (
            TC_REDIRECT,
            "generic XDP sends XDP_TX frames past the qdisc, lost when its queue is stopped",
        ),
        FailFastChoice::Auto if is_veth(iface) => (
            TC_REDIRECT,
            "a veth delivers XDP_TX frames at once only to a peer that runs XDP itself",
        ),
        FailFastChoice::Auto => (XDP_TX, "native XDP on a NIC sends XDP_TX frames itself"),
    }
}

/// `--checksums`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecksumChoice {
    /// Decided by the interface and the XDP mode.
    #[default]
    Auto,
    /// Every segment must carry a valid checksum.
    Verify,
    /// As verify, but a checksum left for the sender's NIC to finish counts as valid.
    AllowOffloaded,
    /// Checksums are not checked.
    Off,
}

/// The datapath's checksum mode for `--checksums` on `iface` attached in `xdp_mode`.
fn checksum_mode(choice: ChecksumChoice, iface: &str, xdp_mode: XdpAttachMode) -> u8 {
    use classifier_common::config::checksums;
    match choice {
        ChecksumChoice::Verify => checksums::VERIFY,
        ChecksumChoice::AllowOffloaded => checksums::ALLOW_OFFLOADED,
        ChecksumChoice::Off => checksums::OFF,
        ChecksumChoice::Auto if xdp_mode == XdpAttachMode::Generic => checksums::OFF,
        ChecksumChoice::Auto if is_veth(iface) => checksums::ALLOW_OFFLOADED,
        ChecksumChoice::Auto => checksums::VERIFY,
    }
}

/// Whether `iface` is a veth (its peer's local senders leave checksums to a NIC).
fn is_veth(iface: &str) -> bool {
    let Ok(index) = nix::net::if_::if_nametoindex(iface) else {
        return false;
    };
    crate::netlink::Netlink::open()
        .and_then(|mut netlink| netlink.link_kind(index))
        .is_ok_and(|kind| kind.as_deref() == Some("veth"))
}

pub fn execute(args: &RunArgs) -> anyhow::Result<()> {
    let mut needed = preflight::RUN_CAPABILITIES.to_vec();
    if args.netns.is_some() {
        needed.push(preflight::NETNS_CAPABILITY);
    }
    preflight::require_capabilities("run", &needed)?;
    preflight::require_kernel_btf()?;
    let build = preflight::datapath_build(args.datapath, loader::EBPF_OBJECT)?;
    loader::use_build(build);
    preflight::require_kernel_features(loader::object_of(build))?;
    tracing::info!(datapath = %build, "BPF programs chosen");
    let tc_attach = preflight::tc_attach_mode(args.tc_attach)?;
    // Before touching the kernel: a policy that does not load stops the start here. Its
    // names keep the ids a previous daemon's flows were classified with.
    let ids = loader::pinned_class_ids(&args.pin_dir)?;
    let policy = sources(args).load_with_ids(&ids)?;
    if let Some(name) = &args.netns {
        netns::enter(name)?;
    }
    preflight::require_interface(&args.iface, args.netns.as_deref())?;
    if let Some(wan) = &args.wan {
        preflight::require_interface(wan, args.netns.as_deref())?;
    }
    preflight::require_bpffs(&args.pin_dir)?;

    // Before touching the pinned datapath: a running daemon must not be taken over.
    control::refuse_if_answered(&args.control_socket)?;
    let capacity = tables::domain_capacity(policy.classes.domains.len());
    let mut datapath = Datapath::load_pinned(&args.pin_dir, capacity)?;
    datapath.set_tc_attach(tc_attach);
    // From here whatever fails takes the datapath off the host as the guards drop: the
    // control socket and the pid file are removed first, then the attachment finishes.
    let mut attachment = Attachment::new(datapath);
    let pid_file = args.pid_file.clone().map(RemovedAtExit);
    let outcome = run_daemon(&mut attachment, policy, args);
    drop(pid_file);
    attachment.finish(outcome, &args.pin_dir)
}

/// A file this daemon made, removed when it exits however it exits.
struct RemovedAtExit(PathBuf);

impl Drop for RemovedAtExit {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Installs the policy's tables, attaches, and serves until a signal. The datapath (and
/// the shaper, once there is one) stays in `attachment`, so the caller detaches and
/// unpins it (or leaves it for the next daemon) whatever happened here.
fn run_daemon(attachment: &mut Attachment, policy: Policy, args: &RunArgs) -> anyhow::Result<Exit> {
    let (events, attached, in_force) = prepare(attachment.datapath(), policy, args)?;
    attachment.set_shaper(Shaper::new(egresses(args)?));
    let store = (!args.no_store).then(|| args.store.clone());
    let recorder = Recorder::open(store, &args.iface, args.wan.as_deref())?;
    // Built after entering the namespace: worker threads inherit the caller's namespace.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (control, _control_socket, metrics, signals) = {
        let _guard = runtime.enter();
        let control = control::bind(&args.control_socket)?;
        let control_socket = RemovedAtExit(args.control_socket.clone());
        (
            control,
            control_socket,
            bind_metrics(args)?,
            daemon::Signals::install()?,
        )
    };
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file)?;
    }
    let (datapath, shaper) = attachment.lend();
    let state = running_state(datapath, shaper, in_force, attached, args);
    // Ready: the datapath enforces, and the control socket and signals are served.
    crate::service::ready(&state.service_status());
    let shared = Shared::new(state);
    let reporting = Reporting {
        interval: args.report_interval,
        print_flows: args.print_flows,
        top: args.top,
    };
    let served = runtime.block_on(daemon::serve(
        shared.clone(),
        events,
        control,
        reporting,
        recorder,
        metrics,
        signals,
    ));
    drop(runtime);
    let state = shared
        .into_inner()
        .expect("no task holds the state once the runtime has stopped");
    attachment.give_back(state.datapath, state.shaper);
    served
}

/// The running daemon's state, with the names of flows a previous daemon knew (or the
/// datapath read while none ran) made its own before it records anything, and shaping set
/// up for the policy in force.
fn running_state(
    datapath: Datapath,
    shaper: Shaper,
    in_force: InForce,
    attached: Attached,
    args: &RunArgs,
) -> State {
    let adopted = datapath.adopted();
    let degradation = Degradation::new(&in_force.policy.degradation, jiff::Timestamp::now());
    let mut state = State {
        datapath,
        in_force,
        learned: Learned::default(),
        shaper,
        interface: args.iface.clone(),
        xdp_mode: attached.xdp_mode,
        fail_fast_replies: attached.fail_fast_replies,
        adopted,
        started: Instant::now(),
        recorded: RecorderStats::default(),
        recent: RecentlyEnded::default(),
        degradation,
        flows_at_last_walk: 0,
        last_intervals: Default::default(),
        last_reload: daemon::LastReload::loaded_at(jiff::Timestamp::now()),
    };
    if let Err(e) = state.learned.adopt_kept_names(&mut state.datapath) {
        tracing::warn!(error = %format!("{e:#}"), "could not read the flow names kept in the kernel");
    }
    state.apply_shaping();
    state
}

/// The interfaces shaping manages: the LAN's egress (downloads), the WAN's (uploads).
fn egresses(args: &RunArgs) -> anyhow::Result<Vec<Egress>> {
    let mut interfaces = vec![Egress::new(&args.iface, "downloads")?];
    if let Some(wan) = &args.wan {
        interfaces.push(Egress::new(wan, "uploads")?);
    }
    Ok(interfaces)
}

/// How the programs ended up attached to the LAN interface.
struct Attached {
    xdp_mode: XdpAttachMode,
    fail_fast_replies: daemon::FailFastReplies,
}

/// The policy's tables in the maps and its decisions for now in force, the event ring
/// taken out, then the programs attached (or put into a previous daemon's attachments):
/// a fresh datapath enforces from its first packet.
fn prepare(
    datapath: &mut Datapath,
    policy: Policy,
    args: &RunArgs,
) -> anyhow::Result<(RingBuf<MapData>, Attached, InForce)> {
    // The checksum mode and the way of fail-fast answers the interface calls for, in place
    // before the tables (a datapath taken over keeps running meanwhile); generic mode,
    // known only once attached, then turns checking off (and answers to TC).
    let native = checksum_mode(args.checksums, &args.iface, XdpAttachMode::Native);
    datapath.set_checksums(native)?;
    let (native_way, _) = fail_fast_way(args.fail_fast_replies, &args.iface, XdpAttachMode::Native);
    datapath.set_fail_fast_replies(native_way)?;
    let in_force = InForce::install(policy, sources(args), datapath, jiff::Timestamp::now())?;
    let events = datapath.take_events()?;
    let xdp_mode = datapath.attach_lan(&args.iface, args.xdp_mode)?;
    let checksums = checksum_mode(args.checksums, &args.iface, xdp_mode);
    if checksums != native {
        datapath.set_checksums(checksums)?;
    }
    let (way, reason) = fail_fast_way(args.fail_fast_replies, &args.iface, xdp_mode);
    datapath.send_fail_fast_replies(&args.iface, way)?;
    let nat = args.nat_mark_mask.unwrap_or_default();
    datapath.hand_over_nat(&args.iface, nat)?;
    if let Some(wan) = &args.wan {
        datapath.attach_wan(wan)?;
    }
    let fail_fast_replies = daemon::FailFastReplies {
        way: fail_fast_replies::name(way).to_owned(),
        reason: reason.to_owned(),
    };
    info!(
        interface = %args.iface,
        wan = args.wan.as_deref().unwrap_or("(none: uploads are not shaped)"),
        xdp_mode = %xdp_mode,
        tc_attach = %datapath.tc_attach(),
        checksums = classifier_common::config::checksums::name(checksums),
        fail_fast_replies = %fail_fast_replies.way,
        fail_fast_reason = %fail_fast_replies.reason,
        nat_mark_mask = %format!("{:#010x}", nat.mark_mask),
        adopted = datapath.adopted(),
        pin_dir = %args.pin_dir.display(),
        policy = %in_force.policy.origin,
        domains = in_force.policy.classes.domains.len(),
        period = %in_force.period,
        generation = in_force.generation,
        "datapath attached: XDP on ingress, TC on egress"
    );
    Ok((
        events,
        Attached {
            xdp_mode,
            fail_fast_replies,
        },
        in_force,
    ))
}

fn sources(args: &RunArgs) -> PolicySources {
    PolicySources {
        policy: args.policy.clone(),
        exceptions: Some(policy::ExceptionsChoice::resolve(
            args.exceptions.as_deref(),
        )),
    }
}

fn write_pid_file(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing pid file {}", path.display()))
}

/// The `/metrics` listener, bound now so a taken port stops the start with a message.
fn bind_metrics(args: &RunArgs) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if args.no_metrics {
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind(args.metrics).with_context(|| {
        format!(
            "listening for Prometheus on {} (another process has it? choose one with \
             --metrics ADDR:PORT, or --no-metrics)",
            args.metrics
        )
    })?;
    listener.set_nonblocking(true)?;
    info!(listen = %args.metrics, "serving /metrics");
    Ok(Some(tokio::net::TcpListener::from_std(listener)?))
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
