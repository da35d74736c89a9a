//! Downloading a list tarball over HTTP or HTTPS (ureq, rustls with the Mozilla roots),
//! into a file, with a size limit and an overall timeout: a server that sends forever or
//! too slowly is cut off, not waited for.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::Progress;

/// Whether `source` names a URL to download rather than a local path.
pub fn is_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Downloads `url` into `to` (created), at most `max_bytes`, within `timeout`; returns the
/// bytes written.
pub fn download(
    url: &str,
    to: &Path,
    max_bytes: u64,
    timeout: Duration,
    progress: Progress<'_>,
) -> anyhow::Result<u64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .max_redirects(5)
        .user_agent(concat!(
            "classifier/",
            env!("CARGO_PKG_VERSION"),
            " (lists import)"
        ))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| anyhow::anyhow!("downloading {url}: {e}"))?;
    let announced = response.body().content_length();
    if let Some(length) = announced.filter(|length| *length > max_bytes) {
        bail!(
            "{url} is {length} bytes, over the download limit of {max_bytes} (--max-download): \
             refused"
        );
    }
    let mut body = response.body_mut().with_config().limit(max_bytes).reader();
    let mut file = File::create_new(to).with_context(|| format!("creating {}", to.display()))?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        let n = body
            .read(&mut buffer)
            .map_err(|e| read_error(url, max_bytes, &e))?;
        if n == 0 {
            break;
        }
        file.write_all(&buffer[..n])?;
        written += n as u64;
        progress(written, announced);
    }
    file.sync_all()?;
    Ok(written)
}

/// A body read's error, with the limit named when that is what stopped it.
fn read_error(url: &str, max_bytes: u64, error: &std::io::Error) -> anyhow::Error {
    let over_limit = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::BodyExceedsLimit(_)));
    if over_limit {
        anyhow::anyhow!(
            "{url} is over the download limit of {max_bytes} bytes (--max-download): refused"
        )
    } else {
        anyhow::anyhow!("downloading {url}: {error} (the download is not used)")
    }
}
