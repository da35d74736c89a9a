//! Connecting to the PostgreSQL store the way libpq does, over TLS (rustls), and never
//! showing a password.
//!
//! rust-postgres knows `sslmode` disable, prefer and require only, verifies nothing by
//! itself and reads no environment; an administrator writes libpq's connection strings.
//! So the TLS settings are taken out of the string here and honoured as libpq documents
//! them (<https://www.postgresql.org/docs/current/libpq-ssl.html>):
//!
//! | `sslmode` | TLS | server certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `allow` | only if plaintext fails | checked against `sslrootcert` if that file exists |
//! | `prefer` (default) | if the server offers it | checked against `sslrootcert` if that file exists |
//! | `require` | always | checked against `sslrootcert` if that file exists |
//! | `verify-ca` | always | signed by a CA of `sslrootcert` (which must exist) |
//! | `verify-full` | always | that, and issued to the host connected to |
//!
//! `sslrootcert` defaults to `~/.postgresql/root.crt`; `sslrootcert=system` trusts the
//! machine's CA store and then requires `verify-full`. A Unix-socket connection never uses
//! TLS. `sslcert`/`sslkey` give a client certificate. Without a password in the string,
//! PGPASSWORD and then the password file (`passfile`, PGPASSFILE, `~/.pgpass`, 0600 only)
//! give it. PGSSLMODE, PGSSLROOTCERT, PGSSLCERT and PGSSLKEY set what the string does not.
//!
//! One difference from libpq: under `prefer`, a server whose certificate fails the check
//! is an error, not a reason to retry in plaintext.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use postgres::{Client, NoTls, config::Host};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What replaces a password wherever a connection string is shown.
pub const REDACTED: &str = "…";

/// `sslmode`, as libpq reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => bail!(
                "sslmode `{other}`: choose disable, allow, prefer, require, verify-ca or \
                 verify-full"
            ),
        })
    }
}

/// Where the CAs that sign the server's certificate come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RootCert {
    /// A PEM file (the default `~/.postgresql/root.crt` may be absent).
    File(PathBuf),
    /// `sslrootcert=system`: the machine's CA store.
    System,
}

/// How much of the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Check {
    Nothing,
    /// Signed by one of these CAs, for any name.
    Chain(RootCert),
    /// Signed by one of these CAs, for the host connected to.
    Full(RootCert),
}

/// A parsed connection string: rust-postgres' configuration and the TLS settings libpq
/// would use.
pub struct Target {
    config: postgres::Config,
    mode: SslMode,
    check: Check,
    client_cert: Option<(PathBuf, PathBuf)>,
}

/// The TLS parameters taken out of the string (rust-postgres would refuse them).
#[derive(Default)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    passfile: Option<String>,
}

impl TlsParams {
    /// Takes `key` if it is one of ours; false otherwise.
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "passfile" => &mut self.passfile,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

impl Target {
    /// Parses a libpq connection string or `postgres://` URL. Errors never quote it.
    pub fn parse(location: &str) -> anyhow::Result<Self> {
        Self::parse_with(location, &|name| std::env::var(name).ok(), &home_dir())
    }

    /// [`Target::parse`] with the environment and home directory given.
    fn parse_with(
        location: &str,
        env: &dyn Fn(&str) -> Option<String>,
        home: &Path,
    ) -> anyhow::Result<Self> {
        let mut params = TlsParams::default();
        let rest = if is_url(location) {
            take_from_url(location, &mut params)
        } else {
            take_from_pairs(location, &mut params)?
        };
        let mut config: postgres::Config = rest
            .parse()
            .map_err(|e| anyhow::anyhow!("the PostgreSQL connection string: {e}"))?;
        let setting = |given: Option<String>, variable: &str| given.or_else(|| env(variable));
        let sslmode = setting(params.sslmode, "PGSSLMODE");
        let sslrootcert = setting(params.sslrootcert, "PGSSLROOTCERT");
        let sslcert = setting(params.sslcert, "PGSSLCERT");
        let sslkey = setting(params.sslkey, "PGSSLKEY");
        let passfile = setting(params.passfile, "PGPASSFILE")
            .map_or_else(|| home.join(".pgpass"), PathBuf::from);

        let root = match sslrootcert.as_deref() {
            Some("system") => RootCert::System,
            Some(file) => RootCert::File(PathBuf::from(file)),
            None => RootCert::File(home.join(".postgresql/root.crt")),
        };
        let mode = match (sslmode.as_deref(), &root) {
            (None, RootCert::System) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
            (Some(text), _) => SslMode::parse(text)?,
        };
        if root == RootCert::System && mode != SslMode::VerifyFull {
            bail!(
                "sslrootcert=system needs sslmode=verify-full (a public CA signs certificates for \
                 anyone's host names)"
            );
        }
        let root_exists = match &root {
            RootCert::System => true,
            RootCert::File(path) => path.exists(),
        };
        let check = match mode {
            SslMode::Disable => Check::Nothing,
            SslMode::VerifyCa | SslMode::VerifyFull if !root_exists => {
                let RootCert::File(path) = &root else {
                    unreachable!("the system store always exists")
                };
                bail!(
                    "sslmode={} needs the CA certificate file {} (sslrootcert): give the file, \
                     use sslrootcert=system for the machine's CAs, or weaken sslmode",
                    if mode == SslMode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    },
                    path.display()
                );
            }
            SslMode::VerifyFull => Check::Full(root),
            // libpq: a root certificate file that exists is used whatever the mode.
            _ if root_exists => Check::Chain(root),
            _ => Check::Nothing,
        };
        let client_cert = match (sslcert, sslkey) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => bail!("a client certificate needs both sslcert and sslkey"),
        };
        if config.get_password().is_none() {
            if let Some(password) = env("PGPASSWORD") {
                config.password(password);
            } else if let Some(password) = password_from_file(&passfile, &config)? {
                config.password(password);
            }
        }
        // libpq never uses TLS on a Unix socket.
        let unix_only = !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|host| matches!(host, Host::Unix(_)));
        let mode = if unix_only { SslMode::Disable } else { mode };
        Ok(Self {
            config,
            mode,
            check,
            client_cert,
        })
    }

    /// The `sslmode` in force (`disable` on a Unix socket).
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// Connects as `sslmode` says.
    pub fn connect(&self) -> anyhow::Result<Client> {
        use postgres::config::SslMode as Wire;
        let mut config = self.config.clone();
        match self.mode {
            SslMode::Disable => Ok(config.ssl_mode(Wire::Disable).connect(NoTls)?),
            SslMode::Allow => match config.ssl_mode(Wire::Disable).connect(NoTls) {
                Ok(client) => Ok(client),
                Err(_) => Ok(config.ssl_mode(Wire::Require).connect(self.tls()?)?),
            },
            SslMode::Prefer => Ok(config.ssl_mode(Wire::Prefer).connect(self.tls()?)?),
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                Ok(config.ssl_mode(Wire::Require).connect(self.tls()?)?)
            }
        }
    }

    /// The rustls connector: ring's algorithms, TLS 1.2 and 1.3, the certificate check.
    fn tls(&self) -> anyhow::Result<MakeRustlsConnect> {
        // Deprecated for want of a post-quantum key exchange, which only aws-lc-rs has in
        // rustls 0.23; aws-lc-rs needs cmake and a C build. The workspace's TLS is ring.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?;
        let builder = match &self.check {
            Check::Full(root) => builder.with_root_certificates(roots(root)?),
            Check::Chain(root) => {
                let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(root)?),
                    provider.clone(),
                )
                .build()
                .context("the server certificate check")?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(HandshakeOnly::any_name(
                        chain, &provider,
                    )))
            }
            Check::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(HandshakeOnly::any_certificate(
                    &provider,
                ))),
        };
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("the client certificate {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("the client key {}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("the client certificate and key")?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The CAs `root` names.
fn roots(root: &RootCert) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("the CA certificates in {}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                bail!("no CA certificate in {} (sslrootcert)", path.display());
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!(
                    "sslrootcert=system: no CA certificate in the machine's store ({} errors)",
                    found.errors.len()
                );
            }
        }
    }
    Ok(store)
}

/// A server certificate check looser than the web's, for libpq's `sslmode`s short of
/// `verify-full`: the certificate is taken as it is ([`HandshakeOnly::any_certificate`]:
/// `prefer`/`require` without a root certificate, as libpq does) or its chain is checked and
/// its name not ([`HandshakeOnly::any_name`]: `verify-ca`, and `prefer`/`require` with a root
/// certificate file). Either way the handshake's signatures are checked with the provider's
/// algorithms (as rustls's own verifier does), so the server holds the key of the
/// certificate it shows and the handshake is a real one. The tests' TLS clients use
/// `any_certificate` for the lab's throw-away certificates.
#[derive(Debug)]
pub struct HandshakeOnly {
    /// The chain's check, whose name errors are forgiven; none: any certificate.
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl HandshakeOnly {
    /// Encrypted, but the server is whoever answers.
    pub fn any_certificate(provider: &CryptoProvider) -> Self {
        Self {
            chain: None,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The chain checked by `chain`, the name not.
    pub fn any_name(
        chain: Arc<rustls::client::WebPkiServerVerifier>,
        provider: &CryptoProvider,
    ) -> Self {
        Self {
            chain: Some(chain),
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for HandshakeOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name: a name error means the chain was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// The user's home directory (libpq's `~`).
fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|user| user.dir)
        })
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The URL without the query parameters [`TlsParams`] takes.
fn take_from_url(url: &str, params: &mut TlsParams) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((*pair, ""));
            !params.take(&percent_decode(key), percent_decode(value))
        })
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The `key=value` string without the parameters [`TlsParams`] takes.
fn take_from_pairs(text: &str, params: &mut TlsParams) -> anyhow::Result<String> {
    let kept: Vec<String> = pairs(text)?
        .into_iter()
        .filter_map(|(key, value)| {
            (!params.take(&key, value.clone())).then(|| format!("{key}={}", quote(&value)))
        })
        .collect();
    Ok(kept.join(" "))
}

/// libpq's `key = value` pairs: values bare (backslash escapes) or single-quoted.
fn pairs(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut chars = text.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            bail!("the PostgreSQL connection string: `{key}` has no `=` after it");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        bail!("the PostgreSQL connection string: `{key}`'s quote is not closed")
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The password for `config`'s first host, port, database and user in the password file
/// (`host:port:db:user:password`, `*` matching anything). As libpq, a file that others
/// may read is ignored, with a warning.
fn password_from_file(path: &Path, config: &postgres::Config) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "the password file has group or world access: ignored (chmod 0600 it)"
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map_or_else(|| "localhost".to_owned(), ToString::to_string),
    };
    let default_socket = matches!(
        config.get_hosts().first(),
        Some(Host::Unix(dir)) if dir == Path::new("/var/run/postgresql") || dir == Path::new("/run/postgresql")
    );
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        let [f_host, f_port, f_db, f_user, password] = fields.as_slice() else {
            continue;
        };
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if (matches(f_host, &host) || (default_socket && f_host == "localhost"))
            && matches(f_port, &port)
            && matches(f_db, dbname)
            && matches(f_user, user)
        {
            return Ok(Some(password.clone()));
        }
    }
    Ok(None)
}

/// A password-file line's fields: `:` separates, `\` escapes.
fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// `location` with any password replaced by [`REDACTED`]: for every log line and error.
/// An SQLite path is returned as it is.
pub fn redact(location: &str) -> String {
    if is_url(location) {
        let (scheme, rest) = location.split_once("://").expect("a URL has ://");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:{REDACTED}@{hosts}"),
                None => format!("{userinfo}@{hosts}"),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, _)) if percent_decode(key) == "password" => {
                            format!("{key}={REDACTED}")
                        }
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        return format!("{scheme}://{authority}{tail}");
    }
    if !location.contains('=') {
        return location.to_owned();
    }
    match pairs(location) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(key, value)| {
                if key == "password" {
                    format!("{key}={REDACTED}")
                } else if value.is_empty()
                    || value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\')
                {
                    format!("{key}={}", quote(&value))
                } else {
                    format!("{key}={value}")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(a PostgreSQL connection string that could not be read; not shown)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-Pw";

    fn parse(location: &str) -> anyhow::Result<Target> {
        parse_env(location, &[])
    }

    fn parse_env(location: &str, env: &[(&str, &str)]) -> anyhow::Result<Target> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Target::parse_with(
            location,
            &|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            Path::new("/nonexistent-home"),
        )
    }

    #[test]
    fn sslmode_and_root_certificate_as_libpq_reads_them() {
        let ca = std::env::temp_dir().join(format!("classifier-pgca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not read until connecting").unwrap();
        let ca_text = ca.display().to_string();
        let cases: &[(String, SslMode, Check)] = &[
            ("host=db".into(), SslMode::Prefer, Check::Nothing),
            (
                "host=db sslmode=disable".into(),
                SslMode::Disable,
                Check::Nothing,
            ),
            (
                "host=db sslmode=require".into(),
                SslMode::Require,
                Check::Nothing,
            ),
            (
                format!("host=db sslmode=require sslrootcert={ca_text}"),
                SslMode::Require,
                Check::Chain(RootCert::File(ca.clone())),
            ),
            (
                format!("host=db sslmode=verify-ca sslrootcert='{ca_text}'"),
                SslMode::VerifyCa,
                Check::Chain(RootCert::File(ca.clone())),
            ),
            (
                format!("postgresql://u@db/flows?sslmode=verify-full&sslrootcert={ca_text}"),
                SslMode::VerifyFull,
                Check::Full(RootCert::File(ca.clone())),
            ),
            (
                "postgres://u@db/flows?sslrootcert=system".into(),
                SslMode::VerifyFull,
                Check::Full(RootCert::System),
            ),
            // libpq ignores sslmode on a Unix socket.
            (
                "host=/run/postgresql sslmode=require".into(),
                SslMode::Disable,
                Check::Nothing,
            ),
        ];
        for (location, mode, check) in cases {
            let target = parse(location).unwrap_or_else(|e| panic!("{location}: {e:#}"));
            assert_eq!(target.mode, *mode, "{location}");
            assert_eq!(target.check, *check, "{location}");
        }
        let from_env = parse_env(
            "host=db",
            &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca_text)],
        )
        .unwrap();
        assert_eq!(from_env.mode, SslMode::VerifyFull);
        std::fs::remove_file(&ca).unwrap();

        for (location, message) in [
            (
                "host=db sslmode=verify-full",
                "needs the CA certificate file",
            ),
            (
                "host=db sslmode=verify-ca sslrootcert=/nonexistent.pem",
                "/nonexistent.pem",
            ),
            ("host=db sslmode=require sslrootcert=system", "verify-full"),
            ("host=db sslmode=secure", "choose disable"),
            ("host=db sslcert=/c.pem", "both sslcert and sslkey"),
        ] {
            let err = parse(location)
                .err()
                .unwrap_or_else(|| panic!("{location} accepted"));
            assert!(format!("{err:#}").contains(message), "{location}: {err:#}");
        }
    }

    #[test]
    fn the_rest_of_the_string_reaches_rust_postgres() {
        let target =
            parse("host=db.example port=6543 user=classifier dbname='flo ws' sslmode=require")
                .unwrap();
        assert_eq!(target.config.get_dbname(), Some("flo ws"));
        assert_eq!(target.config.get_ports(), [6543]);
        let url = parse(
            "postgresql://classifier@db.example:6543/flows?sslmode=disable&application_name=gw1",
        )
        .unwrap();
        assert_eq!(url.config.get_application_name(), Some("gw1"));
        assert_eq!(url.mode, SslMode::Disable);
    }

    #[test]
    fn a_password_comes_from_pgpassword_or_a_private_password_file() {
        let with_env = parse_env("host=db user=u", &[("PGPASSWORD", SECRET)]).unwrap();
        assert_eq!(with_env.config.get_password(), Some(SECRET.as_bytes()));
        // The string's own password wins.
        let given = parse_env("host=db user=u password=mine", &[("PGPASSWORD", SECRET)]).unwrap();
        assert_eq!(given.config.get_password(), Some(&b"mine"[..]));

        use std::os::unix::fs::PermissionsExt as _;
        let file = std::env::temp_dir().join(format!("classifier-pgpass-{}", std::process::id()));
        std::fs::write(
            &file,
            format!(
                "# comment\nother:*:*:*:wrong\ndb.example:5432:flows:classifier:{SECRET}\\:x\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let location = format!(
            "host=db.example user=classifier dbname=flows passfile={}",
            file.display()
        );
        let target = parse(&location).unwrap();
        let expected = format!("{SECRET}:x");
        assert_eq!(target.config.get_password(), Some(expected.as_bytes()));
        // Another port: no match.
        let other = parse(&format!("{location} port=5433")).unwrap();
        assert_eq!(other.config.get_password(), None);
        // Readable by others: ignored, as libpq does.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(parse(&location).unwrap().config.get_password(), None);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn passwords_are_redacted_in_every_form() {
        for location in [
            format!("postgres://classifier:{SECRET}@db.example:5432/flows?sslmode=verify-full"),
            format!("postgresql://classifier:{SECRET}@db1,db2/flows"),
            format!("postgresql://classifier@db/flows?password={SECRET}&sslmode=require"),
            format!("host=db user=classifier password={SECRET} dbname=flows"),
            format!("host=db password = '{SECRET} with spaces' dbname=flows"),
            format!("host=db password='{SECRET}"),
        ] {
            let shown = redact(&location);
            assert!(!shown.contains(SECRET), "{location} → {shown}");
        }
        assert_eq!(
            redact(&format!("postgres://classifier:{SECRET}@db.example/flows")),
            "postgres://classifier:…@db.example/flows"
        );
        assert_eq!(
            redact(&format!("host=db user=classifier password={SECRET}")),
            "host=db user=classifier password=…"
        );
        assert_eq!(
            redact("/var/lib/classifier/flows.sqlite"),
            "/var/lib/classifier/flows.sqlite"
        );
        // Nor do errors about the string quote it.
        let err = parse(&format!("host=db password={SECRET} sslmode=bogus"))
            .err()
            .unwrap();
        assert!(!format!("{err:#}").contains(SECRET), "{err:#}");
        let err = parse(&format!("host=db password={SECRET} port=notaport"))
            .err()
            .unwrap();
        assert!(!format!("{err:#}").contains(SECRET), "{err:#}");
    }
}
