//! Running under a service manager: readiness, reload and stop notifications for a
//! `Type=notify` unit (sd_notify(3)), and log lines that carry their syslog priority.
//!
//! Both work without systemd: with no `NOTIFY_SOCKET` the notifications are not sent, and
//! on a terminal or a file the logs are plain text.

use std::{fmt, io::IsTerminal as _, os::fd::AsFd as _};

use sd_notify::NotifyState;
use tracing::{Event, Level, Subscriber, warn};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, Full, Writer},
    },
    registry::LookupSpan,
};

/// Tells the service manager the daemon is ready (the datapath enforcing, the control
/// socket answering), with a one-line status for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager a reload has begun; [`ready`] ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd 253 and newer want the reload's start time with it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// Tells the service manager the daemon is stopping, and how.
pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn notify(states: &[NotifyState]) {
    // Without NOTIFY_SOCKET this sends nothing and succeeds.
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `prefixed` when stderr is the journal (under systemd), else `text`.
    #[default]
    Auto,
    /// Lines with a timestamp and level (in colour on a terminal).
    Text,
    /// Lines that start with their syslog priority (`<4>` for a warning), which the journal
    /// reads from a service's stderr: `journalctl -p warning` then finds the warnings.
    Prefixed,
}

/// Syslog priorities (RFC 5424) of tracing's levels: what `journalctl -p` filters on.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The priority prefix of the one-line error `classifier` ends with, when its stderr is read
/// by the journal (`<3>`, an error), else nothing.
pub fn error_prefix() -> &'static str {
    if ERRORS_PREFIXED.get().copied().unwrap_or(false) {
        "<3>"
    } else {
        ""
    }
}

static ERRORS_PREFIXED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Sets up logging to stderr in `format`, filtered by `filter` (`info`, `debug`,
/// `classifier_user=debug`, ...).
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Prefixed,
        LogFormat::Auto => LogFormat::Text,
        chosen => chosen,
    };
    let _ = ERRORS_PREFIXED.set(format == LogFormat::Prefixed);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Prefixed => builder
            .with_ansi(false)
            .event_format(SyslogPrefixed::default())
            .init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Whether stderr is the journal's stream for this service: systemd says so in
/// `JOURNAL_STREAM` (the stream's device and inode), which a child whose stderr was
/// redirected inherits but no longer matches.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", stat.st_dev, stat.st_ino))
}

/// Each event on one line, `<priority>` first, then the level, target and fields as the
/// plain format writes them; no timestamp (the journal adds its own).
pub struct SyslogPrefixed {
    inner: Format<Full, ()>,
}

impl Default for SyslogPrefixed {
    fn default() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for SyslogPrefixed
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{error, info, warn};

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_starts_with_its_syslog_priority() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(SyslogPrefixed::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            error!(file = "policy.toml", "an error");
            warn!(
                error = "line 3: unknown field `blok`",
                "policy reload refused"
            );
            info!(interface = "lan0", "datapath attached");
            tracing::debug!("not shown: the default filter of this subscriber is info");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("<3>ERROR "), "{text}");
        assert!(
            lines[0].ends_with("an error file=\"policy.toml\""),
            "{text}"
        );
        assert!(lines[1].starts_with("<4> WARN "), "{text}");
        assert!(
            lines[1].contains("policy reload refused error=\"line 3: unknown field `blok`\""),
            "{text}"
        );
        assert!(lines[2].starts_with("<6> INFO "), "{text}");
    }

    #[test]
    fn priorities_are_syslog_severities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }
}
