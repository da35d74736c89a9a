//! The rustls client configuration of the lab's own TLS clients (`evasive-client`,
//! `handshake-client`): the lab's certificates are self-signed and throw-away, so any
//! certificate is accepted, but the handshake signatures are still checked, so each
//! handshake is a real one: the product's own check for libpq's `sslmode=require`
//! ([`HandshakeOnly`]).

use std::sync::Arc;

use classifier_user::store::pg_connect::HandshakeOnly;
use rustls::ClientConfig;

/// A client configuration for the lab's servers (session resumption left on: callers that
/// want a full handshake each time turn it off).
pub fn lab_client_config() -> Arc<ClientConfig> {
    // ring (a C and assembly build, no CMake or Go as aws-lc-rs needs); rustls 0.23.48
    // deprecates it only for lacking post-quantum key exchange, which a lab client does not
    // need (and a classic X25519 ClientHello is what most clients still send).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(HandshakeOnly::any_certificate(&provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// Whether `response` holds a whole HTTP answer by its Content-Length (answers without one
/// end when the server closes).
pub fn http_answer_complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let headers = String::from_utf8_lossy(&response[..end]);
    headers
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .is_some_and(|length| response.len() >= end + 4 + length)
}
