//! The daemon: the datapath attached and fed the policy's tables, its events read, its
//! counters reported, and questions answered on the control socket.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use classifier_common::flow::FlowKey;
use serde::Serialize;
use tokio::{
    io::{AsyncWriteExt as _, unix::AsyncFd},
    net::{UnixListener, UnixStream, unix::OwnedWriteHalf},
    signal::unix::{Signal, SignalKind, signal},
    sync::{Semaphore, mpsc},
};
use tracing::{debug, info, warn};

mod attachment;
mod start;

pub use self::start::{ChecksumChoice, Config, Daemon, FailFastChoice};
pub use crate::in_force::LastReload;
use crate::{
    control::{self, ErrorReply, Request},
    degradation::{Degradation, IntervalReport},
    events::{Drained, Learned},
    flows::{self, DatapathClock, FlowRecord},
    in_force::InForce,
    loader::{Datapath, XdpAttachMode},
    metrics::{self, DatapathStats},
    quic::worker::Verdicts,
    recorder::{self, RecentlyEnded, Recorder, RecorderStats},
    service,
    shaping::{Shaper, ShapingStatus},
};

/// Most QUIC verdicts applied in one turn of the loop, for the same reason as
/// [`crate::events::EVENTS_PER_TURN`]: the loop's other work is not kept waiting.
const QUIC_VERDICTS_PER_TURN: usize = 256;

/// How often the ring buffer is read for the events that do not wake the daemon (see
/// classifier-ebpf's `events`): a flow's name is in its record within this.
const LAZY_EVENTS_EVERY: Duration = Duration::from_millis(50);

/// Flow records made per hold of the state's lock while answering `flows`: the events, the
/// clock and `status` get the lock between two such chunks.
const RECORDS_PER_LOCK: usize = 4096;

/// What the running daemon holds: the datapath, the policy in force, and what the events
/// told it.
pub struct State {
    pub datapath: Datapath,
    /// The policy, period and decision tables in force.
    pub in_force: InForce,
    /// Flow names and QUIC flows being read, from the datapath's events.
    pub learned: Learned,
    /// The HTB classes (or policer) the shape verdicts use.
    pub shaper: Shaper,
    pub interface: String,
    pub xdp_mode: XdpAttachMode,
    /// How fail-fast answers go back to clients, and why.
    pub fail_fast_replies: FailFastReplies,
    /// The attachments were taken over from a previous daemon.
    pub adopted: bool,
    pub started: Instant,
    /// What the recorder did (it runs beside the state, in the serve loop).
    pub recorded: RecorderStats,
    /// Flows that ended in the last minute, still shown by `classifier flows`.
    pub recent: RecentlyEnded,
    /// The bandwidth-degradation log's accounting (the recorder feeds it).
    pub degradation: Degradation,
    /// Flows the recorder's last walk found in the table.
    pub flows_at_last_walk: usize,
    /// The newest closed interval of each length, for `/metrics`.
    pub last_intervals: std::collections::BTreeMap<u64, IntervalReport>,
    /// How the last policy load or reload went, for `/metrics`.
    pub last_reload: LastReload,
}

/// How fail-fast answers (resets, ICMP unreachables) leave the LAN interface, as `status`
/// shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FailFastReplies {
    /// `xdp-tx` or `tc-redirect` (`classifier_common::config::fail_fast_replies::name`).
    pub way: String,
    /// Why this way: the flag, or what the probe found on the interface.
    pub reason: String,
}

/// The answer to a status request.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Status {
    pub interface: String,
    pub xdp_mode: String,
    /// How the TC programs are on the interfaces: `tcx` (links) or `netlink` (clsact
    /// filters, kernels before 6.6).
    #[serde(default)]
    pub tc_attach: String,
    /// How fail-fast answers go back to clients.
    #[serde(default)]
    pub fail_fast_replies: FailFastReplies,
    /// The programs went into attachments a previous daemon left (a restart).
    pub adopted: bool,
    pub policy: String,
    pub period: String,
    pub period_reason: String,
    pub policy_generation: u32,
    pub next_change: Option<jiff::Timestamp>,
    pub categories: usize,
    pub domains: usize,
    pub rules: usize,
    pub exceptions_active: usize,
    pub uptime_seconds: u64,
    pub flows: usize,
    /// Dropped by block verdicts, over the flows in the table.
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
    /// Put into shaping classes, over the flows in the table.
    pub shaped_bytes: u64,
    pub shaping: ShapingStatus,
    /// What clients have left of the rules' allowances (those the datapath has counted),
    /// spent and fewest left first.
    #[serde(default)]
    pub allowances: Vec<crate::policy::allowances::AllowanceLeft>,
    #[serde(default)]
    pub records: RecorderStats,
    /// QUIC Initials not read because the worker's queue was full (a flood): their flows
    /// got the class of QUIC without a readable name.
    #[serde(default)]
    pub quic_initials_shed: u64,
    pub datapath: DatapathStats,
}

/// What `status` reports of the flow table, summed from one walk of it.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlowTotals {
    pub flows: usize,
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
    pub shaped_bytes: u64,
}

impl FlowTotals {
    fn of(entries: &[(FlowKey, classifier_common::flow::FlowEntry)]) -> Self {
        entries
            .iter()
            .fold(Self::default(), |totals, (_, entry)| Self {
                flows: totals.flows + 1,
                blocked_packets: totals.blocked_packets + entry.blocked.packets,
                blocked_bytes: totals.blocked_bytes + entry.blocked.bytes,
                shaped_bytes: totals.shaped_bytes + entry.shaped.bytes,
            })
    }
}

impl State {
    /// `/metrics` for the state now ([`metrics::prometheus::Snapshot`]).
    pub fn render_metrics(&self) -> anyhow::Result<String> {
        metrics::prometheus::render(&metrics::prometheus::Snapshot {
            interface: &self.interface,
            xdp_mode: self.xdp_mode,
            generation: self.in_force.generation,
            last_reload: self.last_reload,
            policy: &self.in_force.policy,
            totals: &self.degradation.totals,
            last_intervals: &self.last_intervals,
            flows_at_last_walk: self.flows_at_last_walk,
            recorded: self.recorded,
            quic_initials_shed: self.learned.quic_initials_shed,
            datapath: metrics::read_stats(&self.datapath.maps().stats)?,
        })
    }

    /// A handle on the flow table of its own, to walk the table with the state unlocked.
    pub fn flow_table_handle(&self) -> anyhow::Result<flows::OwnedFlowTable> {
        flows::own_handle(&self.datapath.maps().flows)
    }

    /// The status, with `totals` from a walk of the flow table made without the lock.
    pub fn status(&self, totals: FlowTotals) -> anyhow::Result<Status> {
        let in_force = &self.in_force;
        let now = jiff::Timestamp::now();
        Ok(Status {
            interface: self.interface.clone(),
            xdp_mode: self.xdp_mode.to_string(),
            tc_attach: self.datapath.tc_attached().to_string(),
            fail_fast_replies: self.fail_fast_replies.clone(),
            adopted: self.adopted,
            policy: in_force.policy.origin.clone(),
            period: in_force.period.clone(),
            period_reason: in_force.period_reason.clone(),
            policy_generation: in_force.generation,
            next_change: in_force.next_change,
            categories: in_force.policy.classes.categories.len(),
            domains: in_force.policy.classes.domains.len(),
            rules: in_force.policy.rules.len(),
            exceptions_active: in_force
                .policy
                .exceptions
                .iter()
                .filter(|e| e.is_active(now))
                .count(),
            uptime_seconds: self.started.elapsed().as_secs(),
            flows: totals.flows,
            blocked_packets: totals.blocked_packets,
            blocked_bytes: totals.blocked_bytes,
            shaped_bytes: totals.shaped_bytes,
            shaping: self.shaper.status(),
            allowances: crate::shaping::allowances::all_left(&self.datapath, &in_force.policy)?,
            records: self.recorded,
            quic_initials_shed: self.learned.quic_initials_shed,
            datapath: metrics::read_stats(&self.datapath.maps().stats)?,
        })
    }

    /// One line for `systemctl status`: what is enforced, where.
    pub fn service_status(&self) -> String {
        format!(
            "enforcing {} (generation {}) on {} (XDP {}{}), period {}",
            self.in_force.policy.origin,
            self.in_force.generation,
            self.interface,
            self.xdp_mode,
            if self.adopted { ", taken over" } else { "" },
            self.in_force.period
        )
    }

    /// Puts what the client has used of the deciding rule's allowances into an explanation
    /// of a moment within a minute of now (another moment keeps the policy's figures: the
    /// datapath counts only the present).
    fn measure_allowance(
        &self,
        explanation: &mut crate::policy::show::Explanation,
    ) -> anyhow::Result<()> {
        let near_now = jiff::Timestamp::now()
            .duration_since(explanation.at)
            .as_secs()
            .abs()
            < 60;
        let crate::policy::decide::Reason::Rule { rule, .. } = &explanation.decided_by else {
            return Ok(());
        };
        let policy = &self.in_force.policy;
        let Some(rule) = policy.rules.get(rule.saturating_sub(1)) else {
            return Ok(());
        };
        if explanation.allowance.is_some() && near_now {
            explanation.allowance = crate::shaping::allowances::left_for(
                &self.datapath,
                policy,
                explanation.client,
                rule,
            )?;
        }
        Ok(())
    }

    /// Puts the policy's shape rules into the shaper; a failure is logged, and shaped
    /// flows then pass unshaped rather than stop.
    pub fn apply_shaping(&mut self) {
        let policy = &self.in_force.policy;
        if let Err(e) = self
            .shaper
            .apply(policy.shaping, &policy.shapers(), &mut self.datapath)
        {
            warn!(error = %format!("{e:#}"), "could not set up shaping");
        }
    }

    /// Gives the clients the datapath asked about their own shaping classes.
    fn add_client_classes(&mut self) {
        for (class, client) in std::mem::take(&mut self.learned.client_classes_wanted) {
            if let Err(e) = self.shaper.add_client(class, client, &mut self.datapath) {
                warn!(error = %format!("{e:#}"), "could not give a client its shaping class");
            }
        }
    }
}

/// The shared state, locked for one short operation at a time.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<State>>);

impl Shared {
    pub fn new(state: State) -> Self {
        Self(Arc::new(Mutex::new(state)))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the state back once every task has let go of it.
    pub fn into_inner(self) -> Option<State> {
        Arc::into_inner(self.0).map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

impl recorder::Host for Shared {
    fn lend<R>(&self, work: impl FnOnce(recorder::Lent<'_>) -> R) -> R {
        let mut guard = self.lock();
        let state = &mut *guard;
        work(recorder::Lent {
            datapath: &mut state.datapath,
            in_force: &state.in_force,
            names: &mut state.learned.names,
            stats: &mut state.recorded,
            recent: &mut state.recent,
            degradation: &mut state.degradation,
            flows_at_last_walk: &mut state.flows_at_last_walk,
            last_intervals: &mut state.last_intervals,
        })
    }
}

/// How the daemon reports.
#[derive(Debug, Clone)]
pub struct Reporting {
    pub interval: Duration,
    pub print_flows: bool,
    pub top: usize,
}

/// How the daemon ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM, SIGINT: detach the programs and remove the pins.
    Stop,
    /// SIGUSR1: leave the datapath attached and enforcing for the next daemon (an upgrade
    /// or restart without a gap).
    KeepDatapath,
}

/// The signals the daemon acts on. Installed before the pid file is written: a service
/// manager (or a test) that reads the pid and sends SIGTERM at once must reach the
/// handler, not the default action that would leave the programs attached and pinned.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    hand_over: Signal,
}

impl Signals {
    /// Needs a runtime context (tokio registers the handlers with its driver).
    pub fn install() -> anyhow::Result<Self> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Self {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            hand_over: install(SignalKind::user_defined1(), "SIGUSR1")?,
        })
    }
}

/// Runs until SIGTERM, SIGINT or SIGUSR1: reports, reads events, answers the control
/// socket, follows the clock and reloads on SIGHUP.
async fn serve(
    shared: Shared,
    events: RingBuf<MapData>,
    control: UnixListener,
    reporting: Reporting,
    mut recorder: Recorder,
    metrics: Option<tokio::net::TcpListener>,
    signals: Signals,
) -> anyhow::Result<Exit> {
    if let Some(listener) = metrics {
        tokio::spawn(serve_metrics(listener, shared.clone()));
    }
    let Signals {
        mut terminate,
        mut interrupt,
        mut hangup,
        mut hand_over,
    } = signals;
    // Schedule boundaries and exception expiries are acted on within a second.
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // SAFETY: the ring buffer owns its map file descriptor, open and unchanged until the
    // AsyncFd (which owns the ring buffer) is dropped.
    let mut events =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("watching the event ring buffer")?;
    let mut ticks = tokio::time::interval(reporting.interval);
    ticks.tick().await;
    let mut walks = tokio::time::interval(recorder::WALK_EVERY);
    walks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Names and other events that only inform do not wake us (a wake-up per new flow costs
    // more than classifying it): they are read on this tick, or with the next urgent one.
    let mut lazy_events = tokio::time::interval(LAZY_EVENTS_EVERY);
    lazy_events.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quic_verdicts = shared.lock().learned.start_quic_worker()?;
    let connections = Arc::new(Semaphore::new(control::MAX_CONNECTIONS));
    let flow_answers = Arc::new(Semaphore::new(control::FLOW_ANSWERS_AT_ONCE));
    loop {
        tokio::select! {
            // A walk of the flow table: off the async worker for its while.
            _ = ticks.tick() => tokio::task::block_in_place(|| report(&shared, &reporting))?,
            // The store's writes block (SQLite; the PostgreSQL client runs its own runtime):
            // off the async worker for their while.
            _ = walks.tick() => tokio::task::block_in_place(|| recorder.walk(&shared)),
            ready = events.readable_mut() => {
                let mut guard = ready.context("waiting for events")?;
                // After a bounded turn the ring stays marked readable, so the next turn
                // comes at once (after whatever else is ready): the kernel would not wake
                // us for events already waiting.
                if drain_events(&shared, guard.get_inner_mut()) == Drained::Empty {
                    guard.clear_ready();
                }
            }
            _ = lazy_events.tick() => {
                drain_events(&shared, events.get_mut());
            }
            Some(first) = quic_verdicts.recv() => {
                apply_quic_verdicts(&shared, first, &mut quic_verdicts);
            }
            accepted = control.accept() => match accepted {
                Ok((stream, _)) => match connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = shared.clone();
                        let flow_answers = flow_answers.clone();
                        tokio::spawn(async move {
                            if let Err(e) = answer(stream, shared, flow_answers).await {
                                debug!(error = %format!("{e:#}"), "control request failed");
                            }
                            drop(permit);
                        });
                    }
                    // Told at once, without a task: a fresh socket's buffer takes the line
                    // without blocking (and if not, the client is not reading anyway).
                    Err(_) => {
                        let _ = stream.try_write(ErrorReply::line(control::BUSY).as_bytes());
                    }
                },
                Err(e) => warn!(error = %e, "control socket accept failed"),
            },
            _ = clock.tick() => on_clock(&shared),
            _ = hangup.recv() => {
                info!("SIGHUP: reloading the policy");
                let _ = reload(&shared);
            }
            _ = hand_over.recv() => {
                info!("SIGUSR1: exiting, leaving the datapath to the next daemon");
                service::stopping("exiting: the datapath stays attached for the next daemon");
                return Ok(Exit::KeepDatapath);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    info!("shutting down");
    service::stopping("shutting down: detaching the datapath");
    tokio::task::block_in_place(|| recorder.finish(&shared));
    Ok(Exit::Stop)
}

/// Answers `GET /metrics` until the runtime stops.
async fn serve_metrics(listener: tokio::net::TcpListener, shared: Shared) {
    use axum::{http::StatusCode, http::header::CONTENT_TYPE, response::IntoResponse as _};
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move {
                match shared.lock().render_metrics() {
                    Ok(text) => ([(CONTENT_TYPE, metrics::prometheus::content_type())], text)
                        .into_response(),
                    Err(e) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
                    }
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "the metrics endpoint stopped");
    }
}

/// Works the decisions out again when the period changes or an exception expires.
fn on_clock(shared: &Shared) {
    let mut guard = shared.lock();
    let state = &mut *guard;
    if let Err(e) = state
        .in_force
        .on_clock(&mut state.datapath, jiff::Timestamp::now())
    {
        warn!(error = %format!("{e:#}"), "could not put the new period's decisions in force");
    }
}

/// Reloads the policy file; a bad one is logged and changes nothing.
fn reload(shared: &Shared) -> anyhow::Result<crate::in_force::ReloadReport> {
    service::reloading();
    let mut guard = shared.lock();
    let state = &mut *guard;
    let now = jiff::Timestamp::now();
    let reloaded = state.in_force.reload(&mut state.datapath, now);
    state.last_reload.record(now, reloaded.is_ok());
    match &reloaded {
        Ok(_) => state.apply_shaping(),
        Err(e) => warn!(error = %format!("{e:#}"), "policy reload refused"),
    }
    service::ready(&state.service_status());
    reloaded
}

/// Reads one turn's worth of the events waiting in the ring buffer.
pub fn drain_events(shared: &Shared, ring: &mut RingBuf<MapData>) -> Drained {
    let mut guard = shared.lock();
    let state = &mut *guard;
    let drained = state
        .learned
        .drain_turn(ring, &mut state.datapath, &state.in_force.policy);
    state.add_client_classes();
    drained
}

/// Gives the flows the QUIC worker has read their classes: `first`, and those waiting
/// behind it, up to a turn's worth.
fn apply_quic_verdicts(
    shared: &Shared,
    first: (FlowKey, crate::quic::QuicVerdict),
    verdicts: &mut Verdicts,
) {
    let mut guard = shared.lock();
    let state = &mut *guard;
    let policy = &state.in_force.policy;
    let mut next = Some(first);
    let mut applied = 0;
    while let Some((key, verdict)) = next {
        state
            .learned
            .classify_quic(key, &verdict, &mut state.datapath, policy);
        applied += 1;
        next = if applied < QUIC_VERDICTS_PER_TURN {
            verdicts.try_recv().ok()
        } else {
            None
        };
    }
}

/// Logs the counters (and prints the flows with `--print-flows`); the table is walked with
/// the state unlocked.
fn report(shared: &Shared, reporting: &Reporting) -> anyhow::Result<()> {
    let (table, stats) = {
        let state = shared.lock();
        let stats = metrics::read_stats(&state.datapath.maps().stats)?;
        (state.flow_table_handle()?, stats)
    };
    let entries = flows::read_entries(&table).entries;
    info!(flows = entries.len(), counters = %serde_json::to_string(&stats)?, "datapath counters");
    if reporting.print_flows {
        use std::io::Write as _;
        let mut records = Vec::new();
        for_records(shared, entries, |chunk| {
            records.extend(chunk);
            true
        })?;
        let mut out = std::io::stdout().lock();
        flows::write_table(&mut out, &records, reporting.top, usize::MAX)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Makes the records of `entries`, largest flow first, a chunk at a time with the state
/// locked for each chunk only, handing each chunk to `take` until it returns false.
fn for_records(
    shared: &Shared,
    mut entries: Vec<(FlowKey, classifier_common::flow::FlowEntry)>,
    mut take: impl FnMut(Vec<FlowRecord>) -> bool,
) -> anyhow::Result<()> {
    entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.upload.bytes + e.download.bytes));
    let clock = DatapathClock::now()?;
    for chunk in entries.chunks(RECORDS_PER_LOCK) {
        let records = {
            let state = shared.lock();
            let policy = &state.in_force.policy;
            // A name whose event the daemon has not read yet is in the kernel's NAMES.
            let kept = Some(&state.datapath.maps().names);
            let public_sources = Some(&state.datapath.maps().public_sources);
            chunk
                .iter()
                .map(|(key, entry)| {
                    let names = flows::names::of_flow(&state.learned.names, kept, key, entry);
                    let mut record =
                        FlowRecord::from_entry(key, entry, &clock, policy, names.as_ref());
                    record.public_source = FlowRecord::public_source_from(public_sources, key);
                    record
                })
                .collect()
        };
        if !take(records) {
            break;
        }
    }
    Ok(())
}

/// Answers one control connection: one request line, JSON lines back. Each step is bounded
/// in time, and the work (the group database, the flow table, files) is done off the
/// async workers.
async fn answer(
    stream: UnixStream,
    shared: Shared,
    flow_answers: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let credentials = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    // The group database may be remote (LDAP, sssd).
    let (uid, gid) = (credentials.uid(), credentials.gid());
    if !tokio::task::spawn_blocking(move || control::peer_allowed(uid, gid)).await? {
        let refusal = format!("needs root or the `{}` group", control::ADMIN_GROUP);
        return send(&mut write, ErrorReply::line(refusal)).await;
    }
    let request =
        match control::read_request(read, control::MAX_REQUEST_BYTES, control::REQUEST_TIMEOUT)
            .await
        {
            Ok(request) => request,
            Err(bad) => {
                debug!(error = %bad, "control request refused");
                return send(&mut write, ErrorReply::line(bad)).await;
            }
        };
    if request == Request::Flows {
        return answer_flows(shared, flow_answers, write).await;
    }
    let text = tokio::task::spawn_blocking(move || respond(&shared, &request))
        .await?
        .unwrap_or_else(|e| ErrorReply::line(format!("{e:#}")));
    send(&mut write, text).await
}

/// Writes `text`, giving up on a client that does not take it within
/// [`control::WRITE_TIMEOUT`].
async fn send(write: &mut OwnedWriteHalf, text: String) -> anyhow::Result<()> {
    tokio::time::timeout(control::WRITE_TIMEOUT, write.write_all(text.as_bytes()))
        .await
        .context("the client did not read the answer in time")??;
    Ok(())
}

/// `flows`: made on a blocking thread (the table walked with the state unlocked, records
/// made a chunk at a time) and written as it is made, for as long as the client reads. A
/// client that stops reading is dropped after [`control::WRITE_TIMEOUT`], and the making
/// stops with it.
async fn answer_flows(
    shared: Shared,
    flow_answers: Arc<Semaphore>,
    mut write: OwnedWriteHalf,
) -> anyhow::Result<()> {
    let turn = tokio::time::timeout(control::FLOWS_TURN_TIMEOUT, flow_answers.acquire_owned());
    let Ok(Ok(permit)) = turn.await else {
        let busy = format!(
            "busy: {} flow tables are being sent; try again",
            control::FLOW_ANSWERS_AT_ONCE
        );
        return send(&mut write, ErrorReply::line(busy)).await;
    };
    let (lines, mut chunks) = mpsc::channel::<String>(2);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = make_flows(&shared, &lines) {
            let _ = lines.blocking_send(ErrorReply::line(format!("{e:#}")));
        }
        drop(permit);
    });
    while let Some(chunk) = chunks.recv().await {
        send(&mut write, chunk).await?;
    }
    Ok(())
}

/// The lines of the `flows` answer, a chunk at a time into `lines`: the table's flows,
/// largest first, then those that ended in the last minute.
fn make_flows(shared: &Shared, lines: &mpsc::Sender<String>) -> anyhow::Result<()> {
    let table = shared.lock().flow_table_handle()?;
    let entries = flows::read_entries(&table).entries;
    let mut failed = None;
    for_records(shared, entries, |records| match json_lines(&records) {
        // Sent fails when the writer has gone: the client left, or was too slow.
        Ok(text) => lines.blocking_send(text).is_ok(),
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    let recent: Vec<FlowRecord> = shared
        .lock()
        .recent
        .records()
        .map(|(_, _, record)| record.clone())
        .collect();
    let _ = lines.blocking_send(json_lines(&recent)?);
    Ok(())
}

fn json_lines<T: Serialize>(items: &[T]) -> anyhow::Result<String> {
    let mut text = String::new();
    for item in items {
        text += &serde_json::to_string(item)?;
        text.push('\n');
    }
    Ok(text)
}

/// The answer to every request but `flows`; run on a blocking thread.
fn respond(shared: &Shared, request: &Request) -> anyhow::Result<String> {
    let answer = match request {
        Request::Reload => serde_json::to_string(&reload(shared)?)?,
        Request::Status => {
            let table = shared.lock().flow_table_handle()?;
            let totals = FlowTotals::of(&flows::read_entries(&table).entries);
            serde_json::to_string(&shared.lock().status(totals)?)?
        }
        Request::ShowPolicy => {
            let state = shared.lock();
            serde_json::to_string(&crate::policy::show::Summary::of(
                &state.in_force.policy,
                Some(&state.in_force.period),
            ))?
        }
        Request::Explain {
            client,
            target,
            at,
            vlan,
        } => {
            let asked = crate::policy::show::parse_target(target).map_err(anyhow::Error::msg)?;
            let (mut explanation, lists) = {
                let state = shared.lock();
                let (mut explanation, lists) = state
                    .in_force
                    .policy
                    .explain_in_memory(*client, *vlan, &asked, *at);
                state.measure_allowance(&mut explanation)?;
                (explanation, lists)
            };
            // A list file may hold millions of lines: read without holding the state.
            explanation.find_in_lists(&lists);
            serde_json::to_string(&explanation)?
        }
        Request::Flows => unreachable!("answered by answer_flows"),
    };
    Ok(format!("{answer}\n"))
}
