//! TCP flows: the client's first bytes as a TLS ClientHello or an HTTP request, collected
//! over in-order segments when they do not fit one.
//!
//! `classify_upload` copies payload into a stream buffer (this CPU's scratch for a first
//! segment, the flow's REASM entry for later ones) and hands over to `parse_tls` or
//! `parse_http`, which either wait for more, give up, or hand a found name to `name_lookup`.

use core::ops::ControlFlow;

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    classify::{Method, app, class_flags, state},
    config::{Config, STREAM_CAP, stream_kind, tail},
    flow::{FlowEntry, FlowKey},
    parse::{
        PacketBytes, PacketMeta, bittorrent,
        http::{self, HttpStatus, Request, RequestScanner},
        tls::{self, ClientHello, TlsStatus},
    },
    stats::Stat,
};

use super::{
    apply::{finish, set_bittorrent},
    job::{self, Job},
};
use crate::{
    bounded_loop::{LoopBody, bounded_loop},
    maps::{CONFIG, REASM, SCRATCH},
    packet::{HelperPacket, StreamView, append_from_xdp},
    stats,
};

/// The client's first payload segment: a BitTorrent handshake, or the start of a TLS
/// ClientHello or HTTP request, handed to its parser.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
pub unsafe fn inspect_first(
    ctx: &XdpContext,
    packet: &HelperPacket<'_>,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: *mut FlowEntry,
) -> u32 {
    let offset = meta.payload_offset as usize;
    let len = meta.payload_len as usize;
    if bittorrent::tcp_signature(packet, offset, len).is_some() {
        // SAFETY: forwarded from the caller.
        unsafe {
            set_bittorrent(key, entry, Method::BtHandshake);
            finish(key, entry, None);
        }
        return XDP_PASS;
    }
    // A TLS handshake record (type 22, version 3.x), or three capitals of an HTTP method:
    // random bytes (an MSE exchange) then rarely pass for either.
    let kind = match packet.read::<3>(offset) {
        Some([0x16, 0x03, _]) => stream_kind::TLS,
        Some(start) if start.iter().all(u8::is_ascii_uppercase) => stream_kind::HTTP,
        // Anything else (SSH, a 1-byte segment, a BitTorrent encryption (MSE) exchange...):
        // nothing to read here, but keep looking at the next few client packets (the caller
        // stops at `max_inspected`): aria2 and others send the plaintext handshake after an
        // MSE exchange that settled on no encryption.
        _ => return XDP_PASS,
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: `buf` is this CPU's scratch value, `entry` the flow's; both live for the run.
    unsafe {
        (*buf).len = 0;
        (*buf).kind = kind;
        (*buf).next_seq = meta.tcp_seq.wrapping_add(len as u32);
        if append_from_xdp(ctx, buf, offset, len).is_err() || !job::start(key, false, meta.l3_len) {
            finish(key, entry, None);
            return XDP_PASS;
        }
    }
    job::hand_over(ctx, parser_for(kind))
}

/// A later segment of a flow being reassembled: appended if it is the next in sequence,
/// then parsed again.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
pub unsafe fn continue_reassembly(
    ctx: &XdpContext,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: *mut FlowEntry,
) -> u32 {
    let len = meta.payload_len as usize;
    let Some(buf) = REASM.get_ptr_mut(key) else {
        // Evicted under load: what we had is gone.
        stats::bump(Stat::ReassemblyLost);
        // SAFETY: forwarded from the caller.
        unsafe { give_up(key, entry, stream_kind::TLS) };
        return XDP_PASS;
    };
    if len == 0 {
        return XDP_PASS;
    }
    // SAFETY: `buf` is the flow's reassembly value, `entry` its flow value.
    unsafe {
        let kind = (*buf).kind;
        let gap = meta.tcp_seq.wrapping_sub((*buf).next_seq) as i32;
        if gap < 0 {
            return XDP_PASS; // a retransmission of bytes we already have
        }
        if gap > 0 || append_from_xdp(ctx, buf, meta.payload_offset as usize, len).is_err() {
            // A segment went missing or came out of order, or the buffer is full.
            let _ = REASM.remove(key);
            give_up(key, entry, kind);
            return XDP_PASS;
        }
        (*buf).next_seq = (*buf).next_seq.wrapping_add(len as u32);
        (*entry).inspected = (*entry).inspected.saturating_add(1);
        if !job::start(key, true, meta.l3_len) {
            return XDP_PASS;
        }
        job::hand_over(ctx, parser_for(kind))
    }
}

fn parser_for(kind: u8) -> u32 {
    if kind == stream_kind::TLS {
        tail::PARSE_TLS
    } else {
        tail::PARSE_HTTP
    }
}

/// The `parse_tls` program: the job's bytes as a ClientHello record.
#[inline(always)]
pub fn parse_tls(ctx: &XdpContext) -> u32 {
    let Some(job) = Job::current() else {
        return XDP_PASS;
    };
    let mut hello = ClientHello::default();
    // SAFETY: the job's values are live for this program run.
    unsafe {
        let key = (*job.job).key;
        let view = StreamView::of(job.buf);
        match tls::parse_record(&view, view.len(), STREAM_CAP, &mut hello) {
            TlsStatus::NeedMore { .. } => keep_for_more(&job, &key, stream_kind::TLS),
            TlsStatus::Complete if hello.sni_len > 0 => {
                if hello.ech {
                    (*job.entry).class_flags |= class_flags::ECH;
                }
                let found = &mut *job.job;
                found.method = Method::Sni as u8;
                found.protocol_app = app::TLS;
                found.name_offset = hello.sni_offset;
                found.name_len = hello.sni_len;
                return job::hand_over(ctx, tail::NAME_LOOKUP);
            }
            TlsStatus::Complete => {
                if hello.ech {
                    (*job.entry).class_flags |= class_flags::ECH;
                }
                if (*job.entry).app == app::UNKNOWN {
                    (*job.entry).app = app::TLS;
                }
                finish(&key, job.entry, None);
                job.release_buffer(true);
            }
            TlsStatus::Unparsable(_) => {
                give_up(&key, job.entry, stream_kind::TLS);
                job.release_buffer(false);
            }
            TlsStatus::NotTls => {
                finish(&key, job.entry, None);
                job.release_buffer(false);
            }
        }
    }
    job.verdict()
}

/// The `parse_http` program: the job's bytes as an HTTP request.
#[inline(always)]
pub fn parse_http(ctx: &XdpContext) -> u32 {
    let Some(job) = Job::current() else {
        return XDP_PASS;
    };
    let mut request = Request::default();
    // SAFETY: the job's values are live for this program run.
    unsafe {
        let key = (*job.job).key;
        let view = StreamView::of(job.buf);
        let status = match http::check_method(&view, view.len()) {
            Some(status) => status,
            None => {
                let mut scan = HttpScan {
                    view: &view,
                    scanner: RequestScanner::new(view.len()),
                };
                bounded_loop(http::MAX_SCAN as u32, &mut scan);
                request = scan.scanner.request;
                scan.scanner.status()
            }
        };
        match status {
            HttpStatus::NeedMore => keep_for_more(&job, &key, stream_kind::HTTP),
            HttpStatus::Complete => {
                if request.host_len == 0 && !request.tracker_announce {
                    if (*job.entry).app == app::UNKNOWN {
                        (*job.entry).app = app::HTTP;
                    }
                    finish(&key, job.entry, None);
                    job.release_buffer(true);
                    return job.verdict();
                }
                let found = &mut *job.job;
                found.method = Method::Host as u8;
                found.protocol_app = app::HTTP;
                found.tracker = request.tracker_announce as u8;
                found.name_offset = request.host_offset;
                found.name_len = request.host_len;
                return job::hand_over(ctx, tail::NAME_LOOKUP);
            }
            HttpStatus::NotHttp => {
                finish(&key, job.entry, None);
                job.release_buffer(false);
            }
        }
    }
    job.verdict()
}

/// The HTTP scanner's steps as a `bpf_loop` body.
struct HttpScan<'a> {
    view: &'a StreamView,
    scanner: RequestScanner,
}

impl LoopBody for HttpScan<'_> {
    #[inline(always)]
    fn step(&mut self, index: u32) -> ControlFlow<()> {
        self.scanner.step(self.view, index as usize)
    }
}

/// The bytes so far are an incomplete ClientHello or request: a first segment moves from
/// the scratch buffer into a REASM entry for the flow; a later one waits, within limits.
#[inline(always)]
unsafe fn keep_for_more(job: &Job, key: &FlowKey, kind: u8) {
    let max_inspected = CONFIG
        .get(0)
        .map_or(Config::default().max_inspected, |c| c.max_inspected);
    // SAFETY: the job's values are live (caller).
    unsafe {
        if job.in_reassembly() {
            if (*job.entry).inspected >= max_inspected {
                give_up(key, job.entry, kind);
                job.release_buffer(false);
            }
            return;
        }
        // The insert copies the scratch value into the flow's new entry. By reference: a
        // 6 KiB value passed by value would not fit the 512-byte stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let kept = REASM.insert(key, &*job.buf, 0).is_ok();
        if kept {
            (*job.entry).class_state = state::REASSEMBLING;
        } else {
            stats::bump(Stat::ReassemblyLost);
            give_up(key, job.entry, kind);
        }
    }
}

/// The stream cannot be read: a ClientHello is reported as unparsed, not as unknown; a
/// request stays HTTP.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
pub unsafe fn give_up(key: &FlowKey, entry: *mut FlowEntry, kind: u8) {
    let protocol = if kind == stream_kind::TLS {
        stats::bump(Stat::TlsUnparsed);
        // SAFETY: forwarded from the caller.
        unsafe { (*entry).class_flags |= class_flags::TLS_UNPARSED };
        app::TLS
    } else {
        app::HTTP
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        if (*entry).app == app::UNKNOWN {
            (*entry).app = protocol;
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { finish(key, entry, None) };
}
