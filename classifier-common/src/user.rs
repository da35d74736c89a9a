//! User-space only: lets the shared types be read from and written to maps with aya.

use crate::{
    config::{ClassResult, ClassifyJob, Config, PeerKey, PortKey, SourceQuota, StreamBuf},
    domain::DomainEntry,
    event::{ClassifiedEvent, PayloadEvent, ShapeClientEvent},
    flow::{DirectionCounters, FlowEntry, FlowKey, FragmentKey},
    names::{FlowName, NameKey},
    nat::{NatConfig, NatSlot, PublicSource},
    policy::{ActionEntry, ActionKey, ClassNameKey, ExceptionKey, VlanKey},
    shaping::{BucketKey, ClientClassKey, ShapeRule, TokenBucket},
};

// SAFETY: plain `#[repr(C)]` data of integers and byte arrays with explicit padding fields:
// every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for DirectionCounters {}
// SAFETY: as above: #[repr(C)] integers and byte arrays, padding spelled out.
unsafe impl aya::Pod for DomainEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for PortKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ClassResult {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for StreamBuf {}
// SAFETY: as above.
unsafe impl aya::Pod for ClassifiedEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for PayloadEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for ClassifyJob {}
// SAFETY: as above.
unsafe impl aya::Pod for ActionKey {}
// SAFETY: as above: a kind byte and a byte array, 64 bytes, no padding.
unsafe impl aya::Pod for ClassNameKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ActionEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for ExceptionKey {}
// SAFETY: as above.
unsafe impl aya::Pod for VlanKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ShapeRule {}
// SAFETY: as above.
unsafe impl aya::Pod for BucketKey {}
// SAFETY: as above.
unsafe impl aya::Pod for TokenBucket {}
// SAFETY: as above.
unsafe impl aya::Pod for ClientClassKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ShapeClientEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for SourceQuota {}
// SAFETY: as above.
unsafe impl aya::Pod for FragmentKey {}
// SAFETY: as above: a flow key, a version byte and explicit padding, 44 bytes.
unsafe impl aya::Pod for NameKey {}
// SAFETY: as above: integers and byte arrays, padding spelled out, 272 bytes.
unsafe impl aya::Pod for FlowName {}
// SAFETY: as above: integers, padding spelled out, 16 bytes.
unsafe impl aya::Pod for NatConfig {}
// SAFETY: as above: a flow key and an integer, 48 bytes.
unsafe impl aya::Pod for NatSlot {}
// SAFETY: as above: a byte array, an integer and padding spelled out, 24 bytes.
unsafe impl aya::Pod for PublicSource {}
