//! Reading one flow's client Initials for the ClientHello's server name: what the daemon's
//! QUIC worker runs on every Initial the datapath hands over.
//!
//! Kept apart from the policy side of [`super`] (the class a verdict gives) so that this
//! file and `initial.rs` are all the fuzz target `quic_initial` has to compile: they need
//! only `classifier-common` and the RustCrypto crates, not the daemon with its BPF object.

use std::collections::{HashMap, VecDeque};

use classifier_common::{
    flow::FlowKey,
    parse::tls::{self, ClientHello, TlsStatus},
};

use super::initial::{self, QuicError};

/// Flows whose Initials are being collected at once; the oldest is dropped beyond this.
pub const MAX_PENDING_FLOWS: usize = 4096;

/// What the Initials of one flow came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuicVerdict {
    /// The ClientHello's server name (empty when it has none).
    Named {
        name: String,
        /// The ClientHello offered ECH (extension 0xfe0d), real or GREASE.
        ech: bool,
    },
    /// The Initials could not be opened or read: QUIC, name unknown.
    Unreadable(String),
}

/// Client Initials of QUIC flows, kept until their ClientHello is complete.
#[derive(Default)]
pub struct QuicNames {
    pending: HashMap<FlowKey, Vec<Vec<u8>>>,
    order: VecDeque<FlowKey>,
}

impl QuicNames {
    /// Adds one datagram of `key`'s flow; returns the verdict once there is one.
    pub fn add(&mut self, key: FlowKey, datagram: Vec<u8>) -> Option<QuicVerdict> {
        if !self.pending.contains_key(&key) {
            if self.order.len() >= MAX_PENDING_FLOWS
                && let Some(oldest) = self.order.pop_front()
            {
                self.pending.remove(&oldest);
            }
            self.order.push_back(key);
        }
        let datagrams = self.pending.entry(key).or_default();
        datagrams.push(datagram);
        let views: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
        let verdict = match initial::client_hello_from_initials(&views) {
            Err(QuicError::Incomplete { .. }) if views.len() < initial::MAX_DATAGRAMS => {
                return None;
            }
            Ok(client_hello) => server_name(&client_hello),
            Err(e) => QuicVerdict::Unreadable(e.to_string()),
        };
        self.pending.remove(&key);
        self.order.retain(|k| *k != key);
        Some(verdict)
    }

    /// Flows whose ClientHello is still incomplete.
    pub fn pending_flows(&self) -> usize {
        self.pending.len()
    }
}

/// The server name in a ClientHello handshake message.
fn server_name(client_hello: &[u8]) -> QuicVerdict {
    let mut hello = ClientHello::default();
    match tls::parse_handshake(client_hello, client_hello.len(), &mut hello) {
        TlsStatus::Complete => {
            let start = hello.sni_offset as usize;
            let name = &client_hello[start..start + hello.sni_len as usize];
            QuicVerdict::Named {
                name: String::from_utf8_lossy(name).into_owned(),
                ech: hello.ech,
            }
        }
        other => QuicVerdict::Unreadable(format!("ClientHello not readable: {other:?}")),
    }
}
