//! An HTTP/1.x request's Host header, and whether it is a BitTorrent tracker announce.
//!
//! Like the ClientHello, a request may arrive in several segments: the parser reports
//! `NeedMore` until it has seen the Host header or the end of the headers.
//!
//! The name a server uses is the request target's host when the target is in absolute form
//! (`GET http://www.youtube.com/ HTTP/1.1`: RFC 9112 §3.2.2 has the server ignore Host
//! then) or authority form (`CONNECT www.youtube.com:443`, through a proxy); otherwise the
//! Host header's. A request whose head runs past what the datapath reads without naming a
//! host is [`HttpStatus::Unreadable`]: padding headers before Host must not hide it.

use core::ops::ControlFlow;

use super::PacketBytes;

/// Request methods that open a plain HTTP request (with their trailing space).
const METHODS: [&[u8]; 8] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
];
/// Longest method above.
const LONGEST_METHOD: usize = 8;
/// Bytes scanned for the Host header: request line and headers beyond this are not read.
pub const MAX_SCAN: usize = 2048;
/// A tracker announce carries its torrent's hash in the query (BEP 3).
const INFO_HASH: &[u8; 10] = b"info_hash=";
const MAX_NAME_LEN: usize = 255;

/// The parts of a request the classifier uses; offsets are into the parsed bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Offset of the Host value (without port), valid when `host_len > 0`.
    pub host_offset: u16,
    pub host_len: u16,
    /// The request line's query has `info_hash=`: a BitTorrent tracker announce.
    pub tracker_announce: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpStatus {
    /// Does not start with an HTTP method.
    NotHttp,
    /// A request whose Host header has not arrived yet.
    NeedMore,
    /// Done: the Host was found, or the headers ended without one.
    Complete,
    /// The request head goes on past [`MAX_SCAN`] bytes without a host.
    Unreadable,
}

/// Parses a client's first stream bytes `[0, len)` as an HTTP/1.x request: the method,
/// then [`RequestScanner`] over the bytes one at a time (the datapath runs the same steps in
/// a `bpf_loop`).
pub fn parse_request<P: PacketBytes + ?Sized>(p: &P, len: usize, out: &mut Request) -> HttpStatus {
    if let Some(status) = check_method(p, len) {
        return status;
    }
    let mut scanner = RequestScanner::new(len);
    for index in 0..scanner.scan_end() {
        if let ControlFlow::Break(()) = scanner.step(p, index) {
            break;
        }
    }
    *out = scanner.request;
    scanner.status()
}

/// `Some(status)` when the bytes are not (yet) a request: not HTTP, or too short to tell.
#[inline(always)]
pub fn check_method<P: PacketBytes + ?Sized>(p: &P, len: usize) -> Option<HttpStatus> {
    match method_len(p, len) {
        MethodMatch::No => Some(HttpStatus::NotHttp),
        MethodMatch::TooShort => Some(HttpStatus::NeedMore),
        MethodMatch::Yes => None,
    }
}

/// Where the scanner is in the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// In the request line (where a tracker's `info_hash=` would be).
    RequestLine,
    /// At the request target's first byte.
    TargetStart,
    /// In the request target's host (absolute or authority form).
    TargetHost,
    /// At the first byte of a header line (or of the blank line ending the headers).
    LineStart,
    /// Inside a header line that is not Host.
    OtherHeader,
    /// Inside `Host:`, this many bytes from its end.
    HostName(u8),
    /// After `Host:`, before the value.
    HostSpace,
    /// In the Host value.
    HostValue,
    /// Done: the status is final.
    Finished,
}

/// An HTTP request read one byte at a time: finds the Host value and notes a tracker
/// announce. Each [`RequestScanner::step`] looks at one byte (and a few after it).
#[derive(Clone, Copy, Debug)]
pub struct RequestScanner {
    pub request: Request,
    position: Position,
    len: usize,
    value_start: usize,
    /// One past the value's last byte that is not a space or tab.
    value_end: usize,
    bracketed: bool,
    /// A space or tab came after the value's first bytes: only more spaces may follow
    /// (a name has no blanks inside; `www.bbc /x` is no Host).
    blank_in_value: bool,
    /// Set when a Host value or the end of the headers was reached.
    complete: bool,
    /// The request target named the host: the Host header is not read.
    target_named: bool,
}

impl RequestScanner {
    pub fn new(len: usize) -> Self {
        Self {
            request: Request::default(),
            position: Position::RequestLine,
            len,
            value_start: 0,
            value_end: 0,
            bracketed: false,
            blank_in_value: false,
            complete: false,
            target_named: false,
        }
    }

    /// Bytes to scan: the request, up to [`MAX_SCAN`].
    pub fn scan_end(&self) -> usize {
        if self.len < MAX_SCAN {
            self.len
        } else {
            MAX_SCAN
        }
    }

    /// The result once the steps are over.
    pub fn status(&self) -> HttpStatus {
        if self.complete {
            HttpStatus::Complete
        } else if self.len >= MAX_SCAN {
            HttpStatus::Unreadable // a Host beyond what we read cannot be looked for
        } else {
            HttpStatus::NeedMore
        }
    }

    /// Looks at byte `index` (called with 0, 1, 2, ... in order); `Break` once done.
    #[inline(always)]
    pub fn step<P: PacketBytes + ?Sized>(&mut self, p: &P, index: usize) -> ControlFlow<()> {
        if index >= self.scan_end() || self.position == Position::Finished {
            return ControlFlow::Break(());
        }
        let Some([byte]) = p.read::<1>(index) else {
            return ControlFlow::Break(());
        };
        match self.position {
            Position::RequestLine => self.request_line(p, index, byte),
            Position::TargetStart => self.target_start(p, index, byte),
            Position::TargetHost => self.target_host(index, byte),
            Position::LineStart => self.line_start(p, index, byte),
            Position::OtherHeader => {
                if byte == b'\n' {
                    self.position = Position::LineStart;
                }
            }
            Position::HostName(left) => {
                self.position = if left > 1 {
                    Position::HostName(left - 1)
                } else {
                    Position::HostSpace
                };
            }
            Position::HostSpace => {
                if byte != b' ' && byte != b'\t' {
                    self.bracketed = byte == b'[';
                    self.value_start = if self.bracketed { index + 1 } else { index };
                    self.value_end = self.value_start;
                    self.position = Position::HostValue;
                    self.host_value(p, index, byte);
                }
            }
            Position::HostValue => self.host_value(p, index, byte),
            Position::Finished => {}
        }
        if self.position == Position::Finished {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    #[inline(always)]
    fn request_line<P: PacketBytes + ?Sized>(&mut self, p: &P, index: usize, byte: u8) {
        if (byte == b'?' || byte == b'&') && p.read::<10>(index + 1) == Some(*INFO_HASH) {
            self.request.tracker_announce = true;
        }
        if byte == b'\n' {
            self.position = Position::LineStart;
        } else if byte == b' ' && self.value_start == 0 {
            // The space after the method: the target starts next. (`value_start` is 0 only
            // until a target or Host value has been seen.)
            self.value_start = index + 1;
            self.position = Position::TargetStart;
        }
    }

    /// The target's first byte: `http://` or `https://` (any case) opens an absolute-form
    /// target, and CONNECT's target is an authority; both name the host.
    #[inline(always)]
    fn target_start<P: PacketBytes + ?Sized>(&mut self, p: &P, index: usize, byte: u8) {
        self.position = Position::RequestLine;
        let host_at = if p.read::<8>(0) == Some(*b"CONNECT ") {
            Some(index)
        } else {
            match p.read::<8>(index) {
                Some(scheme) if lower(&scheme)[..7] == *b"http://" => Some(index + 7),
                Some(scheme) if lower(&scheme) == *b"https://" => Some(index + 8),
                _ => None,
            }
        };
        if let Some(at) = host_at {
            self.value_start = at;
            self.value_end = at;
            self.position = Position::TargetHost;
            if at == index {
                self.target_host(index, byte);
            }
        } else if byte == b'\n' {
            self.position = Position::LineStart;
        }
    }

    /// A byte of the target's host: it ends at a port, a path, a query or the line's end; a
    /// user name before `@` is not the host.
    #[inline(always)]
    fn target_host(&mut self, index: usize, byte: u8) {
        if index < self.value_start {
            return; // still in the scheme
        }
        match byte {
            b'@' => {
                self.value_start = index + 1;
                self.value_end = index + 1;
            }
            b':' | b'/' | b'?' | b'#' | b' ' | b'\r' | b'\n' => {
                let value_len = self.value_end.saturating_sub(self.value_start);
                if value_len > 0 && value_len <= MAX_NAME_LEN {
                    self.request.host_offset = self.value_start as u16;
                    self.request.host_len = value_len as u16;
                    self.target_named = true;
                }
                self.position = if byte == b'\n' {
                    Position::LineStart
                } else {
                    Position::RequestLine
                };
            }
            _ if !byte.is_ascii_graphic() || byte == b'[' => {
                self.position = Position::RequestLine; // no name in this target
            }
            _ if index - self.value_start >= MAX_NAME_LEN => {
                self.position = Position::RequestLine;
            }
            _ => self.value_end = index + 1,
        }
    }

    #[inline(always)]
    fn line_start<P: PacketBytes + ?Sized>(&mut self, p: &P, index: usize, byte: u8) {
        if self.target_named {
            self.finish(); // the target named the host: Host is not what the server uses
            return;
        }
        let blank = byte == b'\n' || (byte == b'\r' && p.read::<2>(index) == Some(*b"\r\n"));
        if blank {
            self.finish();
        } else if is_host_header(p, index) {
            self.position = Position::HostName(4); // "ost:" still to pass
        } else if byte != b'\n' {
            self.position = Position::OtherHeader;
        }
    }

    /// A byte of the Host value: the value ends at the line end, a port, or `]`.
    #[inline(always)]
    fn host_value<P: PacketBytes + ?Sized>(&mut self, p: &P, index: usize, byte: u8) {
        if byte == b'\r' {
            match p.read::<1>(index + 1) {
                Some([b'\n']) => {}
                // The LF is in a segment still to come: wait for it.
                None if index + 1 >= self.len => return,
                _ => {
                    self.finish(); // a bare CR inside the line: servers refuse the request
                    return;
                }
            }
        }
        let ends = match byte {
            b'\r' | b'\n' => true,
            b':' => !self.bracketed,
            b']' => self.bracketed,
            _ => false,
        };
        if ends {
            let value_len = self.value_end.saturating_sub(self.value_start);
            if value_len > 0 && value_len <= MAX_NAME_LEN {
                self.request.host_offset = self.value_start as u16;
                self.request.host_len = value_len as u16;
            }
            self.finish();
        } else if index.saturating_sub(self.value_start) > MAX_NAME_LEN {
            self.finish(); // longer than any name: not a name
        } else if byte == b' ' || byte == b'\t' {
            if self.bracketed {
                self.finish(); // an address literal has no blanks: not a name
            }
            self.blank_in_value |= self.value_end > self.value_start;
        } else if !byte.is_ascii_graphic() {
            self.finish(); // a control or non-ASCII byte: no server takes that for a name
        } else if self.blank_in_value {
            self.finish(); // a blank inside the value: not a name
        } else if !(self.bracketed && byte == b'[') {
            self.value_end = index + 1;
        }
    }

    fn finish(&mut self) {
        self.complete = true;
        self.position = Position::Finished;
    }
}

enum MethodMatch {
    Yes,
    No,
    /// The bytes so far are the start of a method.
    TooShort,
}

#[inline(always)]
fn method_len<P: PacketBytes + ?Sized>(p: &P, len: usize) -> MethodMatch {
    let mut start = [0u8; LONGEST_METHOD];
    let available = if len < LONGEST_METHOD {
        len
    } else {
        LONGEST_METHOD
    };
    for (i, slot) in start.iter_mut().enumerate().take(available) {
        match p.read::<1>(i) {
            Some([b]) => *slot = b,
            None => return MethodMatch::No,
        }
    }
    let mut prefix_of_some = false;
    let start = u64::from_le_bytes(start);
    for (word, method_len) in METHOD_WORDS.into_iter().zip(METHOD_LENS) {
        if available >= method_len && same_first(start, word, method_len) {
            return MethodMatch::Yes;
        }
        if available < method_len && same_first(start, word, available) {
            prefix_of_some = true;
        }
    }
    if prefix_of_some && available > 0 {
        MethodMatch::TooShort
    } else {
        MethodMatch::No
    }
}

/// [`METHODS`] as little-endian words, zero-padded (made at compile time: a copy of a
/// method's bytes at run time is a `memcpy` the verifier cannot follow).
const METHOD_WORDS: [u64; METHODS.len()] = {
    let mut words = [0u64; METHODS.len()];
    let mut i = 0;
    while i < METHODS.len() {
        words[i] = method_word(METHODS[i]);
        i += 1;
    }
    words
};

/// The lengths of [`METHODS`].
const METHOD_LENS: [usize; METHODS.len()] = {
    let mut lens = [0usize; METHODS.len()];
    let mut i = 0;
    while i < METHODS.len() {
        lens[i] = METHODS[i].len();
        i += 1;
    }
    lens
};

/// A method's bytes as a little-endian word, zero-padded to 8 bytes.
const fn method_word(method: &[u8]) -> u64 {
    let mut bytes = [0u8; LONGEST_METHOD];
    let mut i = 0;
    while i < method.len() && i < LONGEST_METHOD {
        bytes[i] = method[i];
        i += 1;
    }
    u64::from_le_bytes(bytes)
}

/// Whether the first `n` (at most 8) bytes of two little-endian words agree. A compare of
/// words under a mask, not of slices: a slice compare of a length known only at run time
/// is a `memcmp` loop, which the 5.15 verifier walks with lengths past the method's end
/// (it does not carry `available < method.len()` over to the length it reloads).
#[inline(always)]
fn same_first(a: u64, b: u64, n: usize) -> bool {
    let mask = if n >= LONGEST_METHOD {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    };
    (a ^ b) & mask == 0
}

/// ASCII letters of `bytes` in lower case (the first 8 at most).
#[inline(always)]
fn lower(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (slot, byte) in out.iter_mut().zip(bytes) {
        *slot = crate::domain::ascii_lower(*byte);
    }
    out
}

/// `Host:` in any letter case at `offset`.
#[inline(always)]
fn is_host_header<P: PacketBytes + ?Sized>(p: &P, offset: usize) -> bool {
    match p.read::<5>(offset) {
        Some(name) => {
            let lower = [
                name[0] | 0x20,
                name[1] | 0x20,
                name[2] | 0x20,
                name[3] | 0x20,
            ];
            lower == *b"host" && name[4] == b':'
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
