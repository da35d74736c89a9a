//! Domain names to categories by hashed suffixes.
//!
//! For `video.example.co.uk` the datapath looks up the hashes of `uk`, `co.uk`,
//! `example.co.uk` and `video.example.co.uk`, and the longest suffix found wins. The cost
//! depends on the name's labels, never on how many domains the lists hold.
//!
//! Hashing runs right to left over the lowercased name, so one pass yields every suffix's
//! hash in turn. Each entry stores a 64-bit key and an independent 32-bit check; a name
//! matches an entry only if both agree. For a name that is not in a list of N entries, the
//! chance of a false match at one suffix is N / 2^96: about 1.3 × 10⁻²³ with N = 10⁶.
//! Two listed domains sharing a 64-bit key (probability N² / 2^65 ≈ 2.7 × 10⁻⁸ at 10⁶) are
//! detected when the table is built: the first listed is kept (applications' domains come
//! before categories'), and the other is named by `policy check` and the daemon's log.

/// FNV-1a 64-bit offset basis and prime.
const KEY_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const KEY_PRIME: u64 = 0x0000_0100_0000_01b3;
/// An unrelated multiplicative hash (golden-ratio constant) for the check.
const CHECK_SEED: u32 = 0x2545_f491;
const CHECK_MULTIPLIER: u32 = 0x9e37_79b1;

/// Longest DNS name.
pub const MAX_NAME_LEN: usize = 255;

/// The running hash of a suffix, fed one byte at a time from the end of the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SuffixHash {
    pub key: u64,
    pub check: u32,
}

impl Default for SuffixHash {
    fn default() -> Self {
        Self::new()
    }
}

impl SuffixHash {
    pub const fn new() -> Self {
        Self {
            key: KEY_SEED,
            check: CHECK_SEED,
        }
    }

    /// Adds the next byte to the left; ASCII letters are folded to lower case.
    #[inline(always)]
    pub fn push(&mut self, byte: u8) {
        let byte = ascii_lower(byte);
        self.key = (self.key ^ byte as u64).wrapping_mul(KEY_PRIME);
        self.check = (self.check.rotate_left(5) ^ byte as u32).wrapping_mul(CHECK_MULTIPLIER);
    }
}

/// Folds ASCII upper case to lower case; other bytes unchanged (IDNs travel as punycode).
#[inline(always)]
pub const fn ascii_lower(byte: u8) -> u8 {
    if byte >= b'A' && byte <= b'Z' {
        byte | 0x20
    } else {
        byte
    }
}

/// What a domain maps to in the datapath's table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainEntry {
    /// [`SuffixHash::check`] of the listed domain.
    pub check: u32,
    pub category: u16,
    pub app: u16,
}

/// The name without one trailing dot (`example.com.` is `example.com`).
pub fn trim_root(name: &[u8]) -> &[u8] {
    match name.split_last() {
        Some((b'.', rest)) => rest,
        _ => name,
    }
}

/// The hash of a whole (listed) domain, as the datapath computes it for that suffix.
pub fn domain_hash(name: &[u8]) -> SuffixHash {
    let mut hash = SuffixHash::new();
    for &byte in trim_root(name).iter().rev() {
        hash.push(byte);
    }
    hash
}

/// Calls `visit(hash)` for every suffix of `name` that starts at a label, shortest first,
/// ending with the whole name: the order in which the datapath looks them up.
pub fn for_each_suffix(name: &[u8], mut visit: impl FnMut(SuffixHash)) {
    let name = trim_root(name);
    let mut hash = SuffixHash::new();
    for &byte in name.iter().rev() {
        if byte == b'.' {
            visit(hash);
        }
        hash.push(byte);
    }
    if !name.is_empty() {
        visit(hash);
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    #[test]
    fn suffixes_come_shortest_first_and_equal_whole_domain_hashes() {
        let mut seen = Vec::new();
        for_each_suffix(b"video.example.co.uk", |h| seen.push(h));
        let expected: Vec<SuffixHash> = ["uk", "co.uk", "example.co.uk", "video.example.co.uk"]
            .iter()
            .map(|d| domain_hash(d.as_bytes()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn case_and_trailing_dot_do_not_matter() {
        assert_eq!(
            domain_hash(b"WWW.YouTube.COM."),
            domain_hash(b"www.youtube.com")
        );
        let mut seen = Vec::new();
        for_each_suffix(b"Www.Twitch.TV.", |h| seen.push(h));
        assert_eq!(seen.last(), Some(&domain_hash(b"www.twitch.tv")));
        assert_ne!(
            domain_hash(b"xn--bcher-kva.example"),
            domain_hash(b"bucher.example")
        );
    }

    #[test]
    fn key_and_check_are_independent_enough_over_a_large_list() {
        // 200k synthetic domains: no 64-bit key collides, and no two share key and check.
        let mut keys = std::collections::HashSet::new();
        for i in 0..200_000u32 {
            let name = std::format!("host{i}.example{}.co.uk", i % 97);
            assert!(keys.insert(domain_hash(name.as_bytes()).key), "{name}");
        }
    }
}
