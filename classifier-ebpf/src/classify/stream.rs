//! TCP flows: the client's first bytes as a TLS ClientHello or an HTTP request, however the
//! client cut, ordered or wrapped them.
//!
//! `stream_segment` places each segment by its sequence number in a stream buffer (this
//! CPU's scratch while one segment may settle it, the flow's REASM entry once more are
//! needed), after checking its checksum; bytes that overlap bytes already held are
//! compared, and a difference is two versions of the stream. When the in-order prefix
//! grows, the first bytes tell the protocol and the parser runs on the whole prefix: a
//! ClientHello is read here, and its name looked up here (every hand-over to another
//! program costs the flow's lookup again, and the hello is the common case), a handshake
//! spread over records in `parse_tls_records`, an HTTP request in `parse_http`. They wait
//! for more, give up (the flow is then unreadable, a class the policy judges), or name the
//! flow (`name_lookup`).

use core::ops::ControlFlow;

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    classify::{Method, app, class_flags, evasion, state},
    config::{
        ClassifyJob, Config, MAX_STREAM_SEGMENTS, STREAM_CAP, StreamBuf, job_buffer, stream_kind,
        tail,
    },
    flow::{FlowEntry, FlowKey, flow_flags},
    parse::{
        PacketBytes, bittorrent,
        http::{self, HttpStatus, Request, RequestScanner},
        tcp::ChecksumStatus,
        tls::{
            self, ClientHello, MAX_RECORDS, RecordPlan, RecordWalk, RecordsStatus, TlsStatus,
            Unparsable,
        },
    },
    stats::Stat,
    stream::Coverage,
};

use super::{
    apply::{
        finish, finish_stream, give_up, known_peer, note_evasion, release_buffer, second_category,
        set_bittorrent,
    },
    checksum::{Segment, Transport, segment_status},
    job::{self, Job},
};
use crate::{
    bounded_loop::{LoopBody, bounded_loop},
    flows::Flow,
    maps::{CONFIG, DEFRAG, JOBS, LOOPS, LoopState, REASM, SCRATCH, SCRATCH_KEYS, SEGMENT},
    packet::{MAX_SEGMENT, StreamView, ValueSource, load_into, verifier_opaque},
    sources::{self, Quota},
    stats,
};

/// The `stream_segment` program: the job's segment into the flow's stream buffer, then on
/// to a parser when the in-order bytes grew.
#[inline(always)]
pub fn stream_segment(ctx: &XdpContext) -> u32 {
    let Some(job) = JOBS.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: this CPU's job value, copied out.
    let work = unsafe { *job };
    let Some(flow) = Flow::lookup(&work.key) else {
        return XDP_PASS;
    };
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    // SAFETY: `job` is this CPU's job value, live for this program run.
    unsafe { place_segment(ctx, job, &work, flow, config) }
}

/// Where a segment leaves the flow's classification.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing more to do for this packet: give its verdict.
    Verdict,
    /// The in-order bytes grew (or a conflict changed them): read them.
    Read,
    /// Nothing new in order: keep the buffer and wait for more.
    Wait,
    /// The bytes cannot be read within bounds: the flow is unreadable.
    Unreadable,
}

/// # Safety
/// `job` must point to this CPU's live job value.
#[inline(always)]
unsafe fn place_segment(
    ctx: &XdpContext,
    job: *mut ClassifyJob,
    work: &ClassifyJob,
    mut entry: Flow<'_>,
    config: &Config,
) -> u32 {
    let key = work.key;
    let (class_state, recheck) = (
        entry.class_state,
        entry.class_flags & class_flags::RECHECK != 0,
    );
    // The flow's buffer, or this CPU's scratch for a first segment (or a second version
    // of bytes that were read from one segment).
    let has_buffer = entry.flags & flow_flags::STREAM_BUFFER != 0;
    let kept = if has_buffer {
        REASM.get_ptr_mut(key)
    } else {
        None
    };
    let (buf, buffer) = match kept {
        Some(buf) => (buf, job_buffer::REASSEMBLY),
        None => {
            let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
                return XDP_PASS;
            };
            // SAFETY: this CPU's scratch value.
            unsafe {
                (*scratch).coverage = Coverage::default();
                (*scratch).segments = 0;
                (*scratch).kind = stream_kind::UNKNOWN;
            }
            (scratch, job_buffer::SCRATCH)
        }
    };
    // SAFETY: this CPU's job value.
    unsafe { (*job).buffer = buffer };
    let next = if class_state == state::REASSEMBLING && buffer == job_buffer::SCRATCH {
        // Evicted under load: what we had is gone, and nothing may pass unread.
        stats::bump(Stat::ReassemblyLost);
        Next::Unreadable
    } else {
        // SAFETY: `buf` is a live map value (above).
        unsafe { place(ctx, work, &mut entry, buf, config) }
    };
    // SAFETY: as above.
    let next = match next {
        Next::Read => unsafe { dispatch(&key, &mut entry, buf, config, recheck) },
        other => other,
    };
    // SAFETY: as above.
    let next = if next == Next::Read
        && unsafe { (*buf).kind } == stream_kind::TLS
        && unsafe { hello_incomplete(buf) }
    {
        Next::Wait
    } else {
        next
    };
    // SAFETY: as above.
    unsafe {
        match next {
            Next::Read => {
                if (*buf).kind == stream_kind::TLS {
                    // Read here rather than in a program of its own: the hello is read
                    // without a hand-over (and three map lookups) more.
                    return read_tls(ctx, &mut Job { job, entry, buf }, config);
                }
                return job::hand_over(ctx, tail::PARSE_HTTP);
            }
            Next::Wait => {
                if !keep(&key, &mut entry, buf, buffer, config, recheck) {
                    give_up(&key, &mut entry, kind_protocol((*buf).kind));
                }
            }
            Next::Unreadable => give_up(&key, &mut entry, kind_protocol((*buf).kind)),
            Next::Verdict => {}
        }
    }
    job::verdict(ctx, &key, &mut entry)
}

/// Places the segment described by `work` in `buf`: checks its checksum, compares what it
/// overlaps, copies it, and marks its bytes held.
///
/// # Safety
/// `buf` must point to a live map value.
#[inline(always)]
unsafe fn place(
    ctx: &XdpContext,
    work: &ClassifyJob,
    entry: &mut FlowEntry,
    buf: *mut StreamBuf,
    config: &Config,
) -> Next {
    let start = work.stream_offset as usize;
    let len = if (work.payload_len as usize) < MAX_SEGMENT {
        work.payload_len as usize
    } else {
        MAX_SEGMENT
    };
    let end = start + len;
    let held_end = if end < STREAM_CAP { end } else { STREAM_CAP };
    // SAFETY: forwarded from the caller.
    let overlapping = unsafe {
        (*buf)
            .coverage
            .overlaps(start as u16, held_end as u16)
            .any()
    };
    // A segment over bytes already held is copied aside first: its bytes are compared with
    // those held, and only placed once its checksum says the server takes it. Otherwise it
    // goes straight in place, marked held only once its checksum holds.
    let Some(staged) = SEGMENT.get_ptr_mut(0) else {
        return Next::Verdict;
    };
    let (copy, pos) = if overlapping {
        (staged, 0)
    } else {
        (buf, start)
    };
    // SAFETY: both live map values (above, and the caller).
    if unsafe { load_into(ctx, copy, pos, work.payload_offset as usize, len) } != Ok(len) {
        return Next::Verdict;
    }
    // A segment longer than the classifier copies (jumbo frames, GRO in generic mode)
    // cannot be summed: its checksum is not checked.
    let check = config.checksums != classifier_common::config::checksums::OFF
        && (work.payload_len as usize) <= MAX_SEGMENT;
    let segment = Segment {
        transport: Transport::Tcp,
        l4_offset: work.l4_offset as usize,
        header_len: work.l4_header_len as usize,
        pseudo_sum: work.pseudo_sum as u64,
        pos,
        len,
    };
    // SAFETY: as above.
    if check && !accepted(unsafe { segment_status(ctx, &segment, copy) }, config) {
        note_evasion(entry, evasion::BAD_CHECKSUM, Stat::DecoyChecksum);
        return Next::Verdict;
    }
    // SAFETY: as above.
    let conflict = overlapping && unsafe { differs(staged, buf, start, held_end) };
    // SAFETY: as above.
    if overlapping
        && unsafe { load_into(ctx, buf, start, work.payload_offset as usize, len) } != Ok(len)
    {
        return Next::Verdict;
    }
    // SAFETY: `buf` is live (caller).
    unsafe {
        let Ok(grew) = (*buf).coverage.add(start as u16, held_end as u16) else {
            return Next::Unreadable; // more gaps than the buffer keeps track of
        };
        (*buf).segments = (*buf).segments.saturating_add(1);
        entry.held = (*buf).coverage.prefix;
        if (*buf).coverage.has_pieces() && entry.evasion & evasion::REORDERED == 0 {
            note_evasion(entry, evasion::REORDERED, Stat::Reordered);
        }
        if (*buf).segments > MAX_STREAM_SEGMENTS {
            return Next::Unreadable;
        }
        if conflict {
            stats::bump(Stat::StreamConflicts);
            entry.evasion |= evasion::CONFLICT;
            if entry.class_flags & class_flags::RECHECK == 0 {
                // Two versions before any name was read: the later one is parsed, and
                // the flow answers to the `unreadable` category as well.
                second_category(entry, super::apply::protocol_category(app::UNREADABLE));
            }
            return Next::Read;
        }
        if grew { Next::Read } else { Next::Wait }
    }
}

/// Whether a checksum lets the segment count: valid, or left for the sender's NIC where the
/// interface carries such segments (a veth from a local sender).
#[inline(always)]
fn accepted(status: ChecksumStatus, config: &Config) -> bool {
    match status {
        ChecksumStatus::Valid => true,
        ChecksumStatus::Offloaded => {
            config.checksums == classifier_common::config::checksums::ALLOW_OFFLOADED
        }
        ChecksumStatus::Invalid => false,
    }
}

/// Whether the staged segment (its byte 0 at stream offset `start`, up to `end`) differs
/// from the bytes `buf` holds already anywhere in that range.
///
/// # Safety
/// `staged` and `buf` must point to live map values.
#[inline(always)]
unsafe fn differs(
    staged: *const StreamBuf,
    buf: *const StreamBuf,
    start: usize,
    end: usize,
) -> bool {
    let Some(state) = LOOPS.get_ptr_mut(0) else {
        return true; // cannot compare: treat as two versions, the stricter reading
    };
    // SAFETY: this CPU's loop state, live for the program run.
    unsafe { (*state).differ = 0 };
    let mut compare = Compare {
        // SAFETY: forwarded from the caller.
        staged: unsafe { StreamView::with_len(staged, STREAM_CAP) },
        // SAFETY: as above.
        held: unsafe { StreamView::with_len(buf, STREAM_CAP) },
        coverage: buf,
        start,
        end,
        state,
    };
    bounded_loop(MAX_SEGMENT as u32, &mut compare);
    // SAFETY: as above.
    unsafe { (*state).differ != 0 }
}

/// Compares the staged segment with the buffer byte by byte where the buffer holds bytes;
/// a difference is noted in `LOOPS`.
struct Compare {
    staged: StreamView,
    held: StreamView,
    coverage: *const StreamBuf,
    start: usize,
    end: usize,
    state: *mut LoopState,
}

impl LoopBody for Compare {
    #[inline(always)]
    fn step(&mut self, index: u32) -> ControlFlow<()> {
        let at = self.start + index as usize;
        if at >= self.end {
            return ControlFlow::Break(());
        }
        // SAFETY: the buffer is a live map value (see `differs`).
        if !unsafe { (*self.coverage).coverage.holds(at as u16) } {
            return ControlFlow::Continue(());
        }
        let new = self.staged.read::<1>(index as usize);
        let old = self.held.read::<1>(at);
        if new != old {
            // SAFETY: this CPU's loop state (see `differs`).
            unsafe { (*self.state).differ = 1 };
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    #[inline(always)]
    fn loop_state(&self) -> Option<*mut LoopState> {
        Some(self.state)
    }
}

/// The protocol a stream of `kind` is reported as when it cannot be read.
#[inline(always)]
fn kind_protocol(kind: u8) -> u16 {
    if kind == stream_kind::HTTP {
        app::HTTP
    } else {
        app::TLS
    }
}

/// The bytes so far need more to be read: a first segment moves from this CPU's scratch into
/// a REASM entry for the flow (within the client's quota). False when it could not be kept
/// (the flow is then unreadable: nothing may pass unread).
///
/// # Safety
/// `buf` must point to a live map value.
#[inline(always)]
unsafe fn keep(
    key: &FlowKey,
    entry: &mut FlowEntry,
    buf: *mut StreamBuf,
    buffer: u8,
    config: &Config,
    recheck: bool,
) -> bool {
    if buffer == job_buffer::REASSEMBLY {
        return true;
    }
    if !sources::take(&key.client_addr, Quota::Reassembly, config) {
        return false;
    }
    // The insert copies the scratch value into the flow's new entry. By reference: a
    // 6 KiB value passed by value would not fit the 512-byte stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    // SAFETY: `buf` is live (caller).
    let kept = REASM.insert(key, unsafe { &*buf }, 0).is_ok();
    if !kept {
        stats::bump(Stat::ReassemblyLost);
        return false;
    }
    entry.flags |= flow_flags::STREAM_BUFFER;
    if !recheck {
        entry.class_state = state::REASSEMBLING;
    }
    true
}

/// What the first bytes of a stream are.
enum FirstBytes {
    Tls,
    Http,
    BitTorrent,
    /// None of them: SSH, a BitTorrent encryption (MSE) exchange, ...
    Opaque,
    /// Too few bytes to tell.
    TooShort,
}

/// Tells the protocol by the stream's first bytes: a TLS handshake record (type 22,
/// version 3.x), an HTTP method, or the BitTorrent handshake.
#[inline(always)]
fn first_bytes(view: &StreamView) -> FirstBytes {
    let len = view.len();
    let Some([first]) = view.read::<1>(0) else {
        return FirstBytes::TooShort;
    };
    match first {
        0x16 => match view.read::<2>(0) {
            Some([_, 3]) => FirstBytes::Tls,
            Some(_) => FirstBytes::Opaque,
            None => FirstBytes::TooShort,
        },
        // The handshake's length byte: its 20 bytes tell (fewer may be a handshake cut).
        0x13 if len < bittorrent::HANDSHAKE_PREFIX_LEN => FirstBytes::TooShort,
        0x13 if bittorrent::tcp_signature(view, 0, len).is_some() => FirstBytes::BitTorrent,
        b'A'..=b'Z' => match http::check_method(view, len) {
            None => FirstBytes::Http,
            Some(HttpStatus::NeedMore) => FirstBytes::TooShort,
            Some(_) => FirstBytes::Opaque,
        },
        _ => FirstBytes::Opaque,
    }
}

/// The in-order bytes grew: tell the protocol if not yet told. `Read` to run its parser.
///
/// # Safety
/// `buf` must point to a live map value.
#[inline(always)]
unsafe fn dispatch(
    key: &FlowKey,
    entry: &mut FlowEntry,
    buf: *mut StreamBuf,
    config: &Config,
    recheck: bool,
) -> Next {
    // SAFETY: forwarded from the caller.
    if unsafe { (*buf).kind } != stream_kind::UNKNOWN {
        return Next::Read;
    }
    // SAFETY: as above.
    let view = unsafe { StreamView::of(buf) };
    let kind = match first_bytes(&view) {
        FirstBytes::Tls => stream_kind::TLS,
        FirstBytes::Http => stream_kind::HTTP,
        FirstBytes::TooShort => return Next::Wait,
        FirstBytes::BitTorrent => {
            set_bittorrent(key, entry, Method::BtHandshake);
            finish(key, entry, None);
            release_buffer(key, entry);
            return Next::Verdict;
        }
        FirstBytes::Opaque => {
            opaque(key, entry, config, recheck);
            release_buffer(key, entry);
            return Next::Verdict;
        }
    };
    // SAFETY: as above.
    unsafe { (*buf).kind = kind };
    Next::Read
}

/// Whether the held bytes are the start of a ClientHello record not all here yet (most
/// hellos over two segments, after the first): then it need not be parsed yet.
///
/// # Safety
/// `buf` must point to a live map value.
#[inline(always)]
unsafe fn hello_incomplete(buf: *const StreamBuf) -> bool {
    // SAFETY: forwarded from the caller.
    let view = unsafe { StreamView::of(buf) };
    matches!(
        tls::locate_record(&view, view.len(), STREAM_CAP),
        tls::Located::Done(TlsStatus::NeedMore { .. })
    )
}

/// A stream whose first bytes name nothing: BitTorrent if the client learnt its server as
/// a peer (how MSE-encrypted connections are caught); else later segments are looked at
/// one by one, for a handshake after an MSE exchange.
#[inline(always)]
fn opaque(key: &FlowKey, entry: &mut FlowEntry, config: &Config, recheck: bool) {
    if recheck {
        // A second version of named bytes that is neither TLS nor HTTP.
        second_category(entry, super::apply::protocol_category(app::UNREADABLE));
        return;
    }
    if known_peer(key, config) {
        set_bittorrent(key, entry, Method::PeerCache);
        finish(key, entry, None);
        return;
    }
    entry.class_flags |= class_flags::OPAQUE;
    entry.class_state = state::INSPECTING;
    if entry.inspected >= config.max_inspected {
        finish(key, entry, None);
    }
}

/// The job's bytes as a ClientHello record: a name goes on to `name_lookup`, a hello over
/// several records to `parse_tls_records`.
#[inline(always)]
fn read_tls(ctx: &XdpContext, job: &mut Job, config: &Config) -> u32 {
    let mut hello = ClientHello::default();
    let key = job.key();
    let view = job.stream();
    let status = read_hello(
        &view,
        tls::locate_record(&view, view.len(), STREAM_CAP),
        &mut hello,
    );
    // SAFETY: the job's values are live for this program run.
    unsafe {
        let recheck = job.entry.class_flags & class_flags::RECHECK != 0;
        match status {
            TlsStatus::NeedMore { .. } => {
                let buffer = (*job.job).buffer;
                if !keep(&key, &mut job.entry, job.buf, buffer, config, recheck) {
                    give_up(&key, &mut job.entry, app::TLS);
                }
            }
            TlsStatus::Complete if hello.sni_len > 0 => {
                if hello.ech {
                    job.entry.class_flags |= class_flags::ECH;
                }
                let found = &mut *job.job;
                found.method = Method::Sni as u8;
                found.protocol_app = app::TLS;
                found.name_offset = hello.sni_offset;
                found.name_len = hello.sni_len;
                found.parsed_end = view.len() as u16;
                return super::name::classify_job(ctx, job);
            }
            TlsStatus::Complete => {
                if hello.ech {
                    job.entry.class_flags |= class_flags::ECH;
                }
                nameless(&key, &mut job.entry, app::TLS, view.len() as u16, recheck);
            }
            TlsStatus::Unparsable(Unparsable::RecordFragmented) => {
                return job::hand_over(ctx, tail::PARSE_TLS_RECORDS);
            }
            TlsStatus::Unparsable(_) | TlsStatus::NotTls => give_up(&key, &mut job.entry, app::TLS),
        }
    }
    job::verdict(ctx, &key, &mut job.entry)
}

/// The ClientHello's status once its extensions are walked (in a `bpf_loop`, the walk in
/// this CPU's `LOOPS`), with what they held in `hello`.
#[inline(always)]
fn read_hello(view: &StreamView, located: tls::Located, hello: &mut ClientHello) -> TlsStatus {
    let walk = match located {
        tls::Located::Done(status) => return status,
        tls::Located::Extensions(walk) => walk,
    };
    let Some(state) = LOOPS.get_ptr_mut(0) else {
        return TlsStatus::Unparsable(Unparsable::Malformed);
    };
    // SAFETY: this CPU's loop state, live for the program run.
    unsafe {
        (*state).extensions = walk;
        (*state).hello = ClientHello::default();
    }
    let mut steps = Extensions { view, state };
    bounded_loop(tls::MAX_EXTENSIONS as u32 + 1, &mut steps);
    // SAFETY: as above.
    unsafe {
        *hello = (*state).hello;
        tls::conclude(&(*state).extensions, hello)
    }
}

/// [`tls::extension_step`] as a `bpf_loop` body.
struct Extensions<'a> {
    view: &'a StreamView,
    state: *mut LoopState,
}

impl LoopBody for Extensions<'_> {
    #[inline(always)]
    fn step(&mut self, _index: u32) -> ControlFlow<()> {
        // SAFETY: this CPU's loop state (see `read_hello`).
        unsafe {
            let state = &mut *self.state;
            tls::extension_step(self.view, &mut state.extensions, &mut state.hello)
        }
    }

    #[inline(always)]
    fn loop_state(&self) -> Option<*mut LoopState> {
        Some(self.state)
    }
}

/// A ClientHello or request read whole without a name: the flow is the protocol, watched
/// like a named one (a decoy without a name may come before a named hello).
#[inline(always)]
fn nameless(key: &FlowKey, entry: &mut FlowEntry, protocol: u16, end: u16, recheck: bool) {
    if recheck {
        if entry.name_hash != 0 {
            second_category(entry, entry.category);
        } else {
            entry.class_flags &= !class_flags::RECHECK;
        }
        return;
    }
    if entry.app == app::UNKNOWN {
        entry.app = protocol;
    }
    finish_stream(key, entry, None, end, 0);
}

/// The `parse_tls_records` program: a handshake message spread over several TLS records is
/// joined in this CPU's `DEFRAG` and parsed there.
#[inline(always)]
pub fn parse_tls_records(ctx: &XdpContext) -> u32 {
    let Some(mut job) = Job::current() else {
        return XDP_PASS;
    };
    let key = job.key();
    let view = job.stream();
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    let Some(scratch) = SCRATCH_KEYS.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: this CPU's value, live for the program run: the walk's state lives there,
    // off the stack.
    let mut plan = unsafe {
        (*scratch).plan = RecordPlan::default();
        (*scratch).walk = RecordWalk::default();
        (*scratch).status = pack(RecordsStatus::TooLarge);
        Plan {
            view: &view,
            plan: &raw mut (*scratch).plan,
            walk: &raw mut (*scratch).walk,
            status: &raw mut (*scratch).status,
        }
    };
    bounded_loop(MAX_RECORDS as u32, &mut plan);
    // SAFETY: the job's values are live for this program run.
    unsafe {
        let recheck = job.entry.class_flags & class_flags::RECHECK != 0;
        match unpack(*plan.status) {
            RecordsStatus::NeedMore => {
                let buffer = (*job.job).buffer;
                if !keep(&key, &mut job.entry, job.buf, buffer, config, recheck) {
                    give_up(&key, &mut job.entry, app::TLS);
                }
            }
            RecordsStatus::Ready { len } => {
                if job.entry.evasion & evasion::RECORDS == 0 {
                    job.entry.evasion |= evasion::RECORDS;
                }
                let Some(joined) = join(job.buf, plan.plan) else {
                    give_up(&key, &mut job.entry, app::TLS);
                    return job::verdict(ctx, &key, &mut job.entry);
                };
                let joined_view = StreamView::with_len(joined, len as usize);
                let mut hello = ClientHello::default();
                let located = tls::locate_handshake(&joined_view, len as usize);
                match read_hello(&joined_view, located, &mut hello) {
                    TlsStatus::Complete if hello.sni_len > 0 => {
                        if hello.ech {
                            job.entry.class_flags |= class_flags::ECH;
                        }
                        let found = &mut *job.job;
                        found.joined = 1;
                        found.joined_len = len;
                        found.method = Method::Sni as u8;
                        found.protocol_app = app::TLS;
                        found.name_offset = hello.sni_offset;
                        found.name_len = hello.sni_len;
                        found.parsed_end = view.len() as u16;
                        return job::hand_over(ctx, tail::NAME_LOOKUP);
                    }
                    TlsStatus::Complete => {
                        nameless(&key, &mut job.entry, app::TLS, view.len() as u16, recheck);
                    }
                    _ => give_up(&key, &mut job.entry, app::TLS),
                }
            }
            RecordsStatus::Malformed | RecordsStatus::TooLarge => {
                give_up(&key, &mut job.entry, app::TLS)
            }
        }
        job::verdict(ctx, &key, &mut job.entry)
    }
}

/// [`tls::record_step`] as a `bpf_loop` body; the plan and walk are in this CPU's
/// `SCRATCH_KEYS`.
struct Plan<'a> {
    view: &'a StreamView,
    plan: *mut RecordPlan,
    walk: *mut RecordWalk,
    /// The walk's [`RecordsStatus`], [`pack`]ed: an enum with data stored from a callback
    /// would carry an undefined payload on the variants without one, which the verifier
    /// refuses to let be written.
    status: *mut u32,
}

/// A [`RecordsStatus`] as one integer, every bit defined.
#[inline(always)]
fn pack(status: RecordsStatus) -> u32 {
    match status {
        RecordsStatus::Ready { len } => 1 | (len as u32) << 16,
        RecordsStatus::NeedMore => 2,
        RecordsStatus::Malformed => 3,
        RecordsStatus::TooLarge => 4,
    }
}

/// [`pack`] undone.
#[inline(always)]
fn unpack(packed: u32) -> RecordsStatus {
    match packed & 0xff {
        1 => RecordsStatus::Ready {
            len: (packed >> 16) as u16,
        },
        2 => RecordsStatus::NeedMore,
        3 => RecordsStatus::Malformed,
        _ => RecordsStatus::TooLarge,
    }
}

impl LoopBody for Plan<'_> {
    #[inline(always)]
    fn step(&mut self, index: u32) -> ControlFlow<()> {
        let index = index as usize;
        if index >= MAX_RECORDS {
            return ControlFlow::Break(());
        }
        // SAFETY: this CPU's scratch value, live for the program run (see `Plan`).
        let step = unsafe {
            tls::record_step(
                self.view,
                self.view.len(),
                STREAM_CAP,
                index,
                &mut *self.walk,
                &mut *self.plan,
            )
        };
        match step {
            Some(status) => {
                // SAFETY: this CPU's scratch value (see `Plan`).
                unsafe { *self.status = pack(status) };
                ControlFlow::Break(())
            }
            None => ControlFlow::Continue(()),
        }
    }
}

/// Copies the records' parts of the handshake, in order, into this CPU's `DEFRAG`
/// ([`ValueSource`]: a map value to another, at offsets only known at run time).
///
/// # Safety
/// `buf` must point to a live map value.
#[inline(always)]
unsafe fn join(buf: *mut StreamBuf, plan: *const RecordPlan) -> Option<*mut StreamBuf> {
    let joined = DEFRAG.get_ptr_mut(0)?;
    let state = LOOPS.get_ptr_mut(0)?;
    let mut source = ValueSource::empty();
    // SAFETY: `buf` is a live map value of this size; every later read is checked against
    // it.
    if !unsafe { source.attach(buf.cast::<u8>(), size_of::<StreamBuf>()) } {
        return None;
    }
    // SAFETY: this CPU's loop state, live for the program run.
    unsafe {
        (*state).written = 0;
        (*state).failed = 0;
    }
    let mut spans = JoinSpans {
        source: &raw const source,
        plan,
        joined,
        state,
    };
    bounded_loop(MAX_RECORDS as u32, &mut spans);
    // SAFETY: as above.
    (unsafe { (*state).failed } == 0).then_some(joined)
}

/// Copies record `index`'s part into `DEFRAG` after the parts before it.
struct JoinSpans {
    source: *const ValueSource,
    plan: *const RecordPlan,
    joined: *mut StreamBuf,
    state: *mut LoopState,
}

impl LoopBody for JoinSpans {
    #[inline(always)]
    fn step(&mut self, index: u32) -> ControlFlow<()> {
        let index = index as usize;
        // SAFETY: the plan is this CPU's scratch value, the state this CPU's loop state, the
        // source on the caller's stack: all live for the run (see `join`).
        unsafe {
            if index >= MAX_RECORDS || index >= (*self.plan).count {
                return ControlFlow::Break(());
            }
            // The mask shows the verifier the bound LLVM knows from the check above.
            let span = (*self.plan).spans[verifier_opaque(index) & (MAX_RECORDS - 1)];
            let bytes_at = core::mem::offset_of!(StreamBuf, bytes);
            let mut done = 0usize;
            // A record's part is at most STREAM_CAP bytes: three copies of up to MAX_SEGMENT.
            for _ in 0..3 {
                let written = (*self.state).written as usize;
                let left = (span.len as usize).saturating_sub(done);
                if left == 0 || written >= STREAM_CAP {
                    break;
                }
                let room = STREAM_CAP - written;
                let take = if left < room { left } else { room };
                let take = verifier_opaque(if take < MAX_SEGMENT {
                    take
                } else {
                    MAX_SEGMENT
                });
                if take == 0 || take > MAX_SEGMENT {
                    break;
                }
                let dst_at = written & (STREAM_CAP - 1);
                // [dst_at, dst_at + take) is inside `bytes` (dst_at < STREAM_CAP, take <
                // STREAM_SLACK); the helper checks the source.
                let copied = (*self.source).read(
                    (&raw mut (*self.joined).bytes).cast::<u8>().add(dst_at),
                    take as u32,
                    (bytes_at + span.offset as usize + done) as u32,
                );
                if !copied {
                    (*self.state).failed = 1;
                    return ControlFlow::Break(());
                }
                done += take;
                (*self.state).written = (written + take) as u16;
            }
        }
        ControlFlow::Continue(())
    }

    #[inline(always)]
    fn loop_state(&self) -> Option<*mut LoopState> {
        Some(self.state)
    }
}

/// The `parse_http` program: the job's bytes as an HTTP request.
#[inline(always)]
pub fn parse_http(ctx: &XdpContext) -> u32 {
    let Some(mut job) = Job::current() else {
        return XDP_PASS;
    };
    let mut request = Request::default();
    let key = job.key();
    let view = job.stream();
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    let Some(state) = LOOPS.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    let status = match http::check_method(&view, view.len()) {
        Some(status) => status,
        None => {
            let scanner = LoopState::http(state);
            // SAFETY: this CPU's loop state, live for the program run.
            unsafe { *scanner = RequestScanner::new(view.len()) };
            let mut scan = HttpScan {
                view: &view,
                scanner,
            };
            bounded_loop(http::MAX_SCAN as u32, &mut scan);
            // SAFETY: as above.
            unsafe {
                request = (*scanner).request;
                (*scanner).status()
            }
        }
    };
    // SAFETY: the job's values are live for this program run.
    unsafe {
        let recheck = job.entry.class_flags & class_flags::RECHECK != 0;
        match status {
            HttpStatus::NeedMore => {
                let buffer = (*job.job).buffer;
                if !keep(&key, &mut job.entry, job.buf, buffer, config, recheck) {
                    give_up(&key, &mut job.entry, app::HTTP);
                }
            }
            HttpStatus::Complete if request.host_len == 0 && !request.tracker_announce => {
                nameless(&key, &mut job.entry, app::HTTP, view.len() as u16, recheck);
            }
            HttpStatus::Complete => {
                let found = &mut *job.job;
                found.method = Method::Host as u8;
                found.protocol_app = app::HTTP;
                found.tracker = request.tracker_announce as u8;
                found.name_offset = request.host_offset;
                found.name_len = request.host_len;
                found.parsed_end = view.len() as u16;
                return job::hand_over(ctx, tail::NAME_LOOKUP);
            }
            HttpStatus::Unreadable | HttpStatus::NotHttp => {
                give_up(&key, &mut job.entry, app::HTTP)
            }
        }
    }
    job::verdict(ctx, &key, &mut job.entry)
}

/// The HTTP scanner's steps as a `bpf_loop` body; the scanner is in this CPU's `LOOPS`.
struct HttpScan<'a> {
    view: &'a StreamView,
    scanner: *mut RequestScanner,
}

impl LoopBody for HttpScan<'_> {
    #[inline(always)]
    fn step(&mut self, index: u32) -> ControlFlow<()> {
        // SAFETY: this CPU's loop state (see `parse_http`).
        unsafe { (*self.scanner).step(self.view, index as usize) }
    }
}
