//! Bumping the global per-CPU counters.

use classifier_common::stats::Stat;

use crate::maps::STATS;

/// Adds one to a global counter. Per-CPU slot: no other CPU writes it, no atomic needed.
#[inline(always)]
pub fn bump(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, valid for the whole
        // program run and written by no one else meanwhile.
        unsafe { *counter += 1 };
    }
}
