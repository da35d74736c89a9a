//! Which bytes of a client's first stream bytes a reassembly buffer holds.
//!
//! Segments are placed by their sequence number, whatever order they come in: the bytes
//! from offset 0 on that have all arrived form the *prefix*, which is what the parsers read;
//! bytes that came early (a later segment before an earlier one, as `--disorder` sends them)
//! wait in up to [`MAX_PIECES`] *pieces* until the gap before them is filled. A segment that
//! covers bytes already held is compared with them by the caller: equal is a retransmission,
//! different is two versions of the stream, which no honest sender produces.
//!
//! Pure bookkeeping on offsets, run by the datapath and tested here.

/// Out-of-order runs of bytes a buffer keeps beyond its prefix. Each gap in the stream costs
/// one: a ClientHello sent in reverse order as four segments needs three.
pub const MAX_PIECES: usize = 4;

/// A run of stream bytes `[start, end)`; empty (`start == end`) when unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub start: u16,
    pub end: u16,
}

impl Piece {
    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// The bytes a buffer holds: `[0, prefix)` and the pieces.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Bytes held in order from offset 0.
    pub prefix: u16,
    pub _pad: u16,
    pub pieces: [Piece; MAX_PIECES],
}

/// The parts of a new segment's range already held, to compare with what it brings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overlaps {
    pub ranges: [Piece; MAX_PIECES + 1],
}

impl Overlaps {
    /// Whether any byte is held already.
    #[inline(always)]
    pub fn any(&self) -> bool {
        let mut any = false;
        for range in self.ranges {
            any |= !range.is_empty();
        }
        any
    }
}

/// No room for another out-of-order piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoverageFull;

impl Coverage {
    /// What of `[start, end)` is held already: the part inside the prefix, then the part
    /// inside each piece.
    #[inline(always)]
    pub fn overlaps(&self, start: u16, end: u16) -> Overlaps {
        let mut out = Overlaps::default();
        out.ranges[0] = intersect(
            Piece {
                start: 0,
                end: self.prefix,
            },
            start,
            end,
        );
        for i in 0..MAX_PIECES {
            out.ranges[i + 1] = intersect(self.pieces[i], start, end);
        }
        out
    }

    /// Marks `[start, end)` as held. Returns whether the prefix grew (the parsers have more
    /// to read), or [`CoverageFull`] when the range would need a fifth piece.
    #[inline(always)]
    pub fn add(&mut self, start: u16, end: u16) -> Result<bool, CoverageFull> {
        if start >= end {
            return Ok(false);
        }
        let before = self.prefix;
        if start <= self.prefix {
            if end > self.prefix {
                self.prefix = end;
            }
        } else {
            self.add_piece(start, end)?;
        }
        self.absorb_pieces();
        Ok(self.prefix > before)
    }

    /// Joins `[start, end)` with every piece it touches, into one free slot.
    #[inline(always)]
    fn add_piece(&mut self, start: u16, end: u16) -> Result<(), CoverageFull> {
        let mut merged = Piece { start, end };
        for i in 0..MAX_PIECES {
            let piece = self.pieces[i];
            if !piece.is_empty() && piece.start <= merged.end && merged.start <= piece.end {
                merged.start = min(merged.start, piece.start);
                merged.end = max(merged.end, piece.end);
                self.pieces[i] = Piece::default();
            }
        }
        for i in 0..MAX_PIECES {
            if self.pieces[i].is_empty() {
                self.pieces[i] = merged;
                return Ok(());
            }
        }
        Err(CoverageFull)
    }

    /// Pieces the prefix now reaches become part of it.
    #[inline(always)]
    fn absorb_pieces(&mut self) {
        for _ in 0..MAX_PIECES {
            let mut absorbed = false;
            for i in 0..MAX_PIECES {
                let piece = self.pieces[i];
                if !piece.is_empty() && piece.start <= self.prefix {
                    self.prefix = max(self.prefix, piece.end);
                    self.pieces[i] = Piece::default();
                    absorbed = true;
                }
            }
            if !absorbed {
                return;
            }
        }
    }

    /// Whether the byte at stream offset `at` is held.
    #[inline(always)]
    pub fn holds(&self, at: u16) -> bool {
        let mut held = at < self.prefix;
        for piece in self.pieces {
            held |= piece.start <= at && at < piece.end;
        }
        held
    }

    /// Whether bytes beyond the prefix are waiting for a gap to fill.
    #[inline(always)]
    pub fn has_pieces(&self) -> bool {
        let mut any = false;
        for piece in self.pieces {
            any |= !piece.is_empty();
        }
        any
    }
}

#[inline(always)]
fn intersect(piece: Piece, start: u16, end: u16) -> Piece {
    let out = Piece {
        start: max(piece.start, start),
        end: min(piece.end, end),
    };
    if out.is_empty() {
        Piece::default()
    } else {
        out
    }
}

#[inline(always)]
const fn min(a: u16, b: u16) -> u16 {
    if a < b { a } else { b }
}

#[inline(always)]
const fn max(a: u16, b: u16) -> u16 {
    if a > b { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start: u16, end: u16) -> Piece {
        Piece { start, end }
    }

    #[test]
    fn in_order_segments_grow_the_prefix() {
        let mut c = Coverage::default();
        assert_eq!(c.add(0, 1), Ok(true)); // a one-byte first segment
        assert_eq!(c.add(1, 1448), Ok(true));
        assert_eq!(c.add(1448, 1923), Ok(true));
        assert_eq!(c.prefix, 1923);
        assert!(!c.has_pieces());
    }

    #[test]
    fn reversed_segments_wait_then_join() {
        let mut c = Coverage::default();
        assert_eq!(c.add(1500, 1923), Ok(false));
        assert_eq!(c.add(1000, 1500), Ok(false));
        assert_eq!(c.add(500, 1000), Ok(false));
        assert_eq!(c.pieces.iter().filter(|p| !p.is_empty()).count(), 1);
        assert_eq!(c.add(0, 500), Ok(true));
        assert_eq!(c.prefix, 1923);
        assert!(!c.has_pieces());
    }

    #[test]
    fn gaps_beyond_the_pieces_are_refused() {
        let mut c = Coverage::default();
        for i in 0..MAX_PIECES as u16 {
            assert_eq!(c.add(100 * (i + 1), 100 * (i + 1) + 10), Ok(false));
        }
        assert_eq!(c.add(1000, 1010), Err(CoverageFull));
        // Filling a gap next to a piece still works.
        assert_eq!(c.add(110, 200), Ok(false));
        assert_eq!(c.add(0, 100), Ok(true));
        assert_eq!(c.prefix, 210);
    }

    #[test]
    fn overlaps_name_what_is_held() {
        let mut c = Coverage::default();
        c.add(0, 100).unwrap();
        c.add(200, 300).unwrap();
        let o = c.overlaps(50, 250);
        assert!(o.any());
        assert_eq!(o.ranges[0], piece(50, 100));
        assert!(o.ranges[1..].contains(&piece(200, 250)));
        assert!(!c.overlaps(100, 200).any());
        assert!(!c.overlaps(300, 400).any());
    }

    #[test]
    fn a_retransmission_changes_nothing() {
        let mut c = Coverage::default();
        c.add(0, 1448).unwrap();
        let before = c;
        assert_eq!(c.add(0, 1448), Ok(false));
        assert_eq!(c, before);
    }
}
