//! The start of `classifier run`: preflight, the policy loaded, the pinned datapath loaded
//! and attached, the store opened, the control socket, metrics and signals bound, then
//! ready. [`Daemon::start`] returns a guard: however the daemon ends (an error in the
//! start, in the serve loop, or a signal), dropping it or [`Daemon::finish`] takes what it
//! put on the host off again, except after a hand-over (SIGUSR1), which leaves the
//! datapath attached and enforcing for the next daemon.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use classifier_common::{config::fail_fast_replies, nat::NatConfig};
use tokio::{net::UnixListener, runtime::Runtime};
use tracing::{info, warn};

use super::{
    Exit, FailFastReplies, LastReload, Reporting, Shared, Signals, State,
    attachment::{Attachment, RemovedAtExit},
};
use crate::{
    control,
    degradation::Degradation,
    events::Learned,
    in_force::InForce,
    loader::{self, Datapath, DatapathChoice, TcAttachChoice, XdpAttachMode, XdpModeChoice},
    netns,
    policy::{Policy, PolicySources},
    preflight,
    recorder::{RecentlyEnded, Recorder, RecorderStats},
    shaping::{Egress, Shaper},
    tables,
};

/// Everything a start needs to know, typed (the command line's `classifier run` makes it).
#[derive(Debug, Clone)]
pub struct Config {
    /// The LAN-facing interface: XDP on its ingress, TC on its egress (downloads shaped).
    pub iface: String,
    /// The WAN-facing interface, where uploads are shaped; none shapes downloads only.
    pub wan: Option<String>,
    /// The policy file (or the built-in policy) and the exceptions file.
    pub sources: PolicySources,
    /// A network namespace to enter first (`ip netns add` made it).
    pub netns: Option<String>,
    /// Where the maps are pinned on a BPF filesystem; an existing datapath there is re-used.
    pub pin_dir: PathBuf,
    /// Where `classifier flows|status|stop` reach the daemon.
    pub control_socket: PathBuf,
    pub xdp_mode: XdpModeChoice,
    pub tc_attach: TcAttachChoice,
    /// Which build of the BPF programs to load.
    pub datapath: DatapathChoice,
    pub reporting: Reporting,
    /// The flow store (an SQLite file or a PostgreSQL database); none records nothing.
    pub store: Option<String>,
    /// Where `/metrics` is served; none serves no metrics.
    pub metrics: Option<SocketAddr>,
    /// Written with the daemon's PID once attached, removed at exit.
    pub pid_file: Option<PathBuf>,
    pub checksums: ChecksumChoice,
    pub fail_fast_replies: FailFastChoice,
    /// The skb-mark bits an upload's flow is handed to the WAN side in (NAT on the WAN).
    pub nat: Option<NatConfig>,
}

/// How fail-fast answers (a blocked connection's reset, a blocked datagram's ICMP
/// unreachable) go back to the client (`--fail-fast-replies`).
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

/// How TCP and UDP checksums are checked (`--checksums`).
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

/// A started daemon: the datapath attached and enforcing, the control socket, metrics and
/// signals served once [`Daemon::run_until_signal`] runs. A guard: dropped, or
/// [`Daemon::finish`]ed, it removes the control socket and the pid file, then takes the
/// datapath off the host (unless handed over).
pub struct Daemon {
    /// The runtime and the running state; `None` until ready, and once reclaimed.
    running: Option<Running>,
    /// The serve loop's parts, taken by [`Daemon::run_until_signal`].
    serving: Option<Serving>,
    control_socket: Option<RemovedAtExit>,
    pid_file: Option<RemovedAtExit>,
    /// `None` only once finished.
    attachment: Option<Attachment>,
    pin_dir: PathBuf,
}

/// What runs: the runtime (its tasks hold the state) and the state shared with them.
struct Running {
    runtime: Runtime,
    shared: Shared,
}

/// What the serve loop takes.
struct Serving {
    events: RingBuf<MapData>,
    control: UnixListener,
    reporting: Reporting,
    recorder: Recorder,
    metrics: Option<tokio::net::TcpListener>,
    signals: Signals,
}

impl Daemon {
    /// Checks the host, loads the policy, takes over or loads the pinned datapath, puts the
    /// policy's tables in, attaches, opens the store and binds the control socket, metrics
    /// and signals, then tells the service manager it is ready. Whatever fails after the
    /// datapath was loaded takes it off the host again as the guard drops.
    pub fn start(config: Config) -> anyhow::Result<Self> {
        let (policy, datapath) = preflight_and_load(&config)?;
        let mut daemon = Self {
            running: None,
            serving: None,
            control_socket: None,
            pid_file: config.pid_file.clone().map(RemovedAtExit),
            attachment: Some(Attachment::new(datapath)),
            pin_dir: config.pin_dir.clone(),
        };
        daemon.bring_up(policy, config)?;
        Ok(daemon)
    }

    /// Serves until SIGTERM, SIGINT (detach) or SIGUSR1 (hand over): reports, reads
    /// events, answers the control socket, follows the clock and reloads on SIGHUP.
    pub fn run_until_signal(&mut self) -> anyhow::Result<Exit> {
        let (Some(running), Some(serving)) = (&self.running, self.serving.take()) else {
            anyhow::bail!("the daemon was not started, or has already served");
        };
        running.runtime.block_on(super::serve(
            running.shared.clone(),
            serving.events,
            serving.control,
            serving.reporting,
            serving.recorder,
            serving.metrics,
            serving.signals,
        ))
    }

    /// How the daemon ended: the control socket and the pid file are removed, then the
    /// datapath is detached and unpinned, or, handed over, left attached and enforcing.
    /// An error taking it off the host is the answer if the daemon itself ended well.
    pub fn finish(mut self, outcome: anyhow::Result<Exit>) -> anyhow::Result<()> {
        self.reclaim();
        self.control_socket = None;
        self.pid_file = None;
        let attachment = self.attachment.take().expect("finished once");
        attachment.finish(outcome, &self.pin_dir)
    }

    /// Stops the runtime and gives the datapath and shaper back to the attachment.
    fn reclaim(&mut self) {
        if let Some(Running { runtime, shared }) = self.running.take() {
            self.serving = None;
            drop(runtime);
            let state = shared
                .into_inner()
                .expect("no task holds the state once the runtime has stopped");
            if let Some(attachment) = &mut self.attachment {
                attachment.give_back(state.datapath, state.shaper);
            }
        }
    }

    /// The start after the datapath is loaded: tables, attachment, shaping, store, runtime,
    /// sockets, signals, pid file, ready.
    fn bring_up(&mut self, policy: Policy, config: Config) -> anyhow::Result<()> {
        let attachment = self.attachment.as_mut().expect("not finished");
        let (events, attached, in_force) = prepare(attachment.datapath(), policy, &config)?;
        attachment.set_shaper(Shaper::new(egresses(&config)?));
        let recorder = Recorder::open(config.store.clone(), &config.iface, config.wan.as_deref())?;
        // Built after entering the namespace: worker threads inherit the caller's namespace.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let (control, metrics, signals) = {
            let _guard = runtime.enter();
            let control = control::bind(&config.control_socket)?;
            self.control_socket = Some(RemovedAtExit(config.control_socket.clone()));
            (control, bind_metrics(config.metrics)?, Signals::install()?)
        };
        if let Some(pid_file) = &config.pid_file {
            write_pid_file(pid_file)?;
        }
        let (datapath, shaper) = attachment.lend();
        let state = running_state(datapath, shaper, in_force, attached, &config);
        // Ready: the datapath enforces, and the control socket and signals are served.
        crate::service::ready(&state.service_status());
        self.running = Some(Running {
            runtime,
            shared: Shared::new(state),
        });
        self.serving = Some(Serving {
            events,
            control,
            reporting: config.reporting,
            recorder,
            metrics,
            signals,
        });
        Ok(())
    }
}

impl Drop for Daemon {
    /// A start that failed, or a daemon never finished: the fields then drop in order, the
    /// control socket and pid file removed, then the attachment detaches.
    fn drop(&mut self) {
        self.reclaim();
    }
}

/// Everything that can refuse the start before the kernel is touched (capabilities, BTF,
/// BPF features, the policy, the interfaces, bpffs, a daemon already running), then the
/// pinned datapath loaded or taken over.
fn preflight_and_load(config: &Config) -> anyhow::Result<(Policy, Datapath)> {
    let mut needed = preflight::RUN_CAPABILITIES.to_vec();
    if config.netns.is_some() {
        needed.push(preflight::NETNS_CAPABILITY);
    }
    preflight::require_capabilities("run", &needed)?;
    preflight::require_kernel_btf()?;
    let chosen = preflight::datapath_build(config.datapath, loader::object_of)?;
    chosen.require_features()?;
    let tc_attach = preflight::tc_attach_mode(config.tc_attach)?;
    // Before touching the kernel: a policy that does not load stops the start here. Its
    // names keep the ids a previous daemon's flows were classified with.
    let ids = loader::pinned_class_ids(&config.pin_dir)?;
    let policy = config.sources.load_with_ids(&ids)?;
    if let Some(name) = &config.netns {
        netns::enter(name)?;
    }
    preflight::require_interface(&config.iface, config.netns.as_deref())?;
    if let Some(wan) = &config.wan {
        preflight::require_interface(wan, config.netns.as_deref())?;
    }
    preflight::require_bpffs(&config.pin_dir)?;

    // Before touching the pinned datapath: a running daemon must not be taken over.
    control::refuse_if_answered(&config.control_socket)?;
    let capacity = tables::domain_capacity(policy.classes.domains.len());
    let mut datapath = load_or_fall_back(config, chosen.build, capacity)?;
    datapath.set_tc_attach(tc_attach);
    Ok((policy, datapath))
}

/// The pinned datapath of `build` loaded, or under `--datapath auto` the legacy build's
/// when this kernel's verifier refuses the modern one ([`loader::load_falling_back`]), with a
/// warning. Both builds have the same maps, so pins the refused load left behind serve the
/// legacy one.
fn load_or_fall_back(
    config: &Config,
    build: loader::DatapathBuild,
    capacity: u32,
) -> anyhow::Result<Datapath> {
    let (datapath, fell_back) = loader::load_falling_back(config.datapath, build, || {
        Datapath::load_pinned(&config.pin_dir, capacity)
    })?;
    if let Some(loader::FellBack { refused, .. }) = fell_back {
        warn!(
            refused = %refused,
            reason = loader::verifier_reason(&refused).unwrap_or_default(),
            "this kernel's verifier refuses the modern build of the BPF programs: loaded the \
             legacy build instead (docs/kernels.md)"
        );
    }
    Ok(datapath)
}

/// How the programs ended up attached to the LAN interface.
struct Attached {
    xdp_mode: XdpAttachMode,
    fail_fast_replies: FailFastReplies,
}

/// The policy's tables in the maps and its decisions for now in force, the event ring
/// taken out, then the programs attached (or put into a previous daemon's attachments):
/// a fresh datapath enforces from its first packet.
fn prepare(
    datapath: &mut Datapath,
    policy: Policy,
    config: &Config,
) -> anyhow::Result<(RingBuf<MapData>, Attached, InForce)> {
    // The checksum mode and the way of fail-fast answers the interface calls for, in place
    // before the tables (a datapath taken over keeps running meanwhile); generic mode,
    // known only once attached, then turns checking off (and answers to TC).
    let iface = &config.iface;
    let native = checksum_mode(config.checksums, iface, XdpAttachMode::Native);
    datapath.set_checksums(native)?;
    let (native_way, _) = fail_fast_way(config.fail_fast_replies, iface, XdpAttachMode::Native);
    datapath.set_fail_fast_replies(native_way)?;
    let sources = config.sources.clone();
    let in_force = InForce::install(policy, sources, datapath, jiff::Timestamp::now())?;
    let events = datapath.take_events()?;
    let xdp_mode = datapath.attach_lan(iface, config.xdp_mode)?;
    let checksums = checksum_mode(config.checksums, iface, xdp_mode);
    if checksums != native {
        datapath.set_checksums(checksums)?;
    }
    let (way, reason) = fail_fast_way(config.fail_fast_replies, iface, xdp_mode);
    datapath.send_fail_fast_replies(iface, way)?;
    let nat = config.nat.unwrap_or_default();
    datapath.hand_over_nat(iface, nat)?;
    if let Some(wan) = &config.wan {
        datapath.attach_wan(wan)?;
    }
    let fail_fast_replies = FailFastReplies {
        way: fail_fast_replies::name(way).to_owned(),
        reason: reason.to_owned(),
    };
    info!(
        interface = %iface,
        wan = config.wan.as_deref().unwrap_or("(none: uploads are not shaped)"),
        xdp_mode = %xdp_mode,
        datapath = %datapath.build(),
        tc_attach = %datapath.tc_attach(),
        checksums = classifier_common::config::checksums::name(checksums),
        fail_fast_replies = %fail_fast_replies.way,
        fail_fast_reason = %fail_fast_replies.reason,
        nat_mark_mask = %format!("{:#010x}", nat.mark_mask),
        adopted = datapath.adopted(),
        pin_dir = %config.pin_dir.display(),
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

/// The running daemon's state, with the names of flows a previous daemon knew (or the
/// datapath read while none ran) made its own before it records anything, and shaping set
/// up for the policy in force.
fn running_state(
    datapath: Datapath,
    shaper: Shaper,
    in_force: InForce,
    attached: Attached,
    config: &Config,
) -> State {
    let adopted = datapath.adopted();
    let degradation = Degradation::new(&in_force.policy.degradation, jiff::Timestamp::now());
    let mut state = State {
        datapath,
        in_force,
        learned: Learned::default(),
        shaper,
        interface: config.iface.clone(),
        xdp_mode: attached.xdp_mode,
        fail_fast_replies: attached.fail_fast_replies,
        adopted,
        started: Instant::now(),
        recorded: RecorderStats::default(),
        recent: RecentlyEnded::default(),
        degradation,
        flows_at_last_walk: 0,
        last_intervals: Default::default(),
        last_reload: LastReload::loaded_at(jiff::Timestamp::now()),
    };
    if let Err(e) = state.learned.adopt_kept_names(&mut state.datapath) {
        tracing::warn!(error = %format!("{e:#}"), "could not read the flow names kept in the kernel");
    }
    state.apply_shaping();
    state
}

/// The interfaces shaping manages: the LAN's egress (downloads), the WAN's (uploads).
fn egresses(config: &Config) -> anyhow::Result<Vec<Egress>> {
    let mut interfaces = vec![Egress::new(&config.iface, "downloads")?];
    if let Some(wan) = &config.wan {
        interfaces.push(Egress::new(wan, "uploads")?);
    }
    Ok(interfaces)
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
        .and_then(|mut netlink| netlink.link(index))
        .is_ok_and(|link| link.kind.as_deref() == Some("veth"))
}

fn write_pid_file(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing pid file {}", path.display()))
}

/// The `/metrics` listener, bound now so a taken port stops the start with a message.
fn bind_metrics(listen: Option<SocketAddr>) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(listen).with_context(|| {
        format!(
            "listening for Prometheus on {listen} (another process has it? choose one with \
             --metrics ADDR:PORT, or --no-metrics)"
        )
    })?;
    listener.set_nonblocking(true)?;
    info!(listen = %listen, "serving /metrics");
    Ok(Some(tokio::net::TcpListener::from_std(listener)?))
}
