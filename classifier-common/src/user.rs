//! User-space only: lets the shared types be read from and written to maps with aya.

use crate::flow::{DirectionCounters, FlowEntry, FlowKey};

// SAFETY: plain `#[repr(C)]` data of integers and byte arrays with explicit padding fields:
// every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for DirectionCounters {}
