//! The stock distribution kernels the test suite boots under qemu (tests/src/vm.rs,
//! tests/tests/distro_kernels.rs): fetched once into a cache, checked against pinned SHA-256
//! sums, unpacked, and given a modules.dep so that modprobe works inside the VM.
//!
//! Why these kernels: they are what the gateways councils run today ship with, and both are
//! older than TCX (6.6), so the datapath's clsact path and its refusals are tried on a real
//! verifier of that age, not only forced on this host's newer kernel (docs/kernels.md).

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

/// Where the kernels are kept, shared by every clone on the machine; $CLASSIFIER_TEST_KERNELS
/// overrides it. tests/src/vm.rs reads the same.
pub const DEFAULT_CACHE: &str = "/var/cache/classifier-test-kernels";

/// One kernel: its directory in the cache (`boot/vmlinuz-<release>`,
/// `lib/modules/<release>`), and the packages it is unpacked from.
struct TestKernel {
    name: &'static str,
    release: &'static str,
    debs: &'static [Deb],
}

/// A package, pinned by exact version and SHA-256.
struct Deb {
    file: &'static str,
    source: Source,
    sha256: &'static str,
}

enum Source {
    /// From this machine's own apt sources (Debian's archive), `package=version`.
    Apt {
        package: &'static str,
        version: &'static str,
    },
    /// From another distribution's archive, by URL.
    Url(&'static str),
}

const KERNELS: &[TestKernel] = &[
    // Debian 12 (bookworm): its stock kernel, 6.1. No TCX: TC goes on as clsact filters.
    TestKernel {
        name: "debian-12",
        release: "6.1.0-47-amd64",
        debs: &[Deb {
            file: "linux-image-6.1.0-47-amd64-unsigned_6.1.170-3_amd64.deb",
            source: Source::Apt {
                package: "linux-image-6.1.0-47-amd64-unsigned",
                version: "6.1.170-3",
            },
            sha256: "cb9a263a6d0d2debe8ac20eadc1065ffb8b22d27f4a6471ac1c0314db341dfb0",
        }],
    },
    // Debian's 6.12 series (Debian 13's kernel, offered to Debian 12 by its security
    // archive): TCX links, a newer verifier than 6.1's.
    TestKernel {
        name: "debian-6.12",
        release: "6.12.118+deb12-amd64",
        debs: &[Deb {
            file: "linux-image-6.12.118+deb12-amd64-unsigned_6.12.118-1~deb12u1_amd64.deb",
            source: Source::Apt {
                package: "linux-image-6.12.118+deb12-amd64-unsigned",
                version: "6.12.118-1~deb12u1",
            },
            sha256: "628257aaa694038ae776ddc9cbc89c096b4df55e6fccd8a51352288af69b4ad9",
        }],
    },
    // Ubuntu 22.04 LTS (jammy): its GA kernel, 5.15. Lacks bpf_loop, bpf_xdp_load_bytes and
    // dynptrs, which the datapath needs: `classifier` must refuse it by name.
    TestKernel {
        name: "ubuntu-22.04",
        release: "5.15.0-204-generic",
        debs: &[
            Deb {
                file: "linux-image-unsigned-5.15.0-204-generic_5.15.0-204.214_amd64.deb",
                source: Source::Url(
                    "http://archive.ubuntu.com/ubuntu/pool/main/l/linux/\
                     linux-image-unsigned-5.15.0-204-generic_5.15.0-204.214_amd64.deb",
                ),
                sha256: "2fa65ba92f39485b97c53d68b4245931a2fb6abadadf250769b48f86f7eaa815",
            },
            Deb {
                file: "linux-modules-5.15.0-204-generic_5.15.0-204.214_amd64.deb",
                source: Source::Url(
                    "http://archive.ubuntu.com/ubuntu/pool/main/l/linux/\
                     linux-modules-5.15.0-204-generic_5.15.0-204.214_amd64.deb",
                ),
                sha256: "e205a3933a1f6551dc04e3975b46df119fe12a0ba4b5ea37bdcd30862ad69a98",
            },
        ],
    },
];

/// The name of the file that marks a kernel's directory as complete: it holds the sums of
/// the packages it was unpacked from, so a changed pin unpacks again.
const COMPLETE: &str = ".complete";

pub fn cache_dir() -> PathBuf {
    std::env::var_os("CLASSIFIER_TEST_KERNELS").map_or_else(|| DEFAULT_CACHE.into(), PathBuf::from)
}

/// Fetches and unpacks every test kernel that is not already in the cache.
pub fn ensure_all() -> anyhow::Result<()> {
    let cache = cache_dir();
    for kernel in KERNELS {
        ensure(&cache, kernel)
            .with_context(|| format!("preparing the {} test kernel", kernel.name))?;
    }
    Ok(())
}

fn ensure(cache: &Path, kernel: &TestKernel) -> anyhow::Result<()> {
    let dir = cache.join(kernel.name);
    let stamp = stamp(kernel);
    if fs::read_to_string(dir.join(COMPLETE)).is_ok_and(|found| found == stamp) {
        return Ok(());
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    for deb in kernel.debs {
        fetch(&debs, deb)?;
    }
    unpack(cache, kernel, &debs)?;
    fs::write(dir.join(COMPLETE), stamp)?;
    Ok(())
}

fn stamp(kernel: &TestKernel) -> String {
    let sums: Vec<&str> = kernel.debs.iter().map(|d| d.sha256).collect();
    format!("{} {}\n", kernel.release, sums.join(" "))
}

/// Downloads `deb` into `debs` unless a copy with the pinned sum is there; a download whose
/// sum differs is removed and is an error.
fn fetch(debs: &Path, deb: &Deb) -> anyhow::Result<()> {
    let path = debs.join(deb.file);
    if path.exists() && sha256_of(&path)? == deb.sha256 {
        return Ok(());
    }
    let _ = fs::remove_file(&path);
    eprintln!("setup: downloading {}", deb.file);
    match deb.source {
        Source::Apt { package, version } => apt_download(debs, package, version)?,
        Source::Url(url) => curl_download(&path, url)?,
    }
    if !path.exists() {
        bail!("the download left no {} in {}", deb.file, debs.display());
    }
    let found = sha256_of(&path)?;
    if found != deb.sha256 {
        let _ = fs::remove_file(&path);
        bail!(
            "{} has SHA-256 {found}, not the pinned {}: the archive's copy is not the one \
             this project tested; check it and update the pin in xtask/src/test_kernels.rs",
            deb.file,
            deb.sha256
        );
    }
    Ok(())
}

/// `apt-get download package=version` in `dir`; once more after `apt-get update` when the
/// package lists are old or missing.
fn apt_download(dir: &Path, package: &str, version: &str) -> anyhow::Result<()> {
    let pinned = format!("{package}={version}");
    let download = || {
        Command::new("apt-get")
            // As root into a root-owned cache: apt's own download user could not write there.
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", &pinned])
            .current_dir(dir)
            .status()
    };
    if download().is_ok_and(|status| status.success()) {
        return Ok(());
    }
    let _ = Command::new("apt-get").args(["update", "-q"]).status();
    let status = download().context("running apt-get download")?;
    if !status.success() {
        bail!(
            "`apt-get download {pinned}` failed ({status}): is that version still in the \
             Debian archive? A newer point release may have replaced it: pin the current one \
             (name, version and SHA-256) in xtask/src/test_kernels.rs"
        );
    }
    Ok(())
}

fn curl_download(path: &Path, url: &str) -> anyhow::Result<()> {
    let partial = path.with_extension("part");
    let status = Command::new("curl")
        .args([
            "--fail",
            "--silent",
            "--show-error",
            "--location",
            "--retry",
            "3",
        ])
        .arg("--output")
        .arg(&partial)
        .arg(url)
        .status()
        .context("running curl")?;
    if !status.success() {
        let _ = fs::remove_file(&partial);
        bail!("downloading {url} failed ({status})");
    }
    fs::rename(&partial, path)?;
    Ok(())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// Unpacks the kernel's packages into a fresh directory and runs depmod there, then puts it
/// in place: an interrupted unpack leaves no half directory under the kernel's name.
fn unpack(cache: &Path, kernel: &TestKernel, debs: &Path) -> anyhow::Result<()> {
    let dir = cache.join(kernel.name);
    let fresh = cache.join(format!("{}.unpacking", kernel.name));
    let _ = fs::remove_dir_all(&fresh);
    fs::create_dir_all(&fresh)?;
    for deb in kernel.debs {
        crate::run_checked(
            Command::new("dpkg-deb")
                .arg("--extract")
                .arg(debs.join(deb.file))
                .arg(&fresh),
        )?;
    }
    for needed in [
        format!("boot/vmlinuz-{}", kernel.release),
        format!("lib/modules/{}/modules.order", kernel.release),
    ] {
        if !fresh.join(&needed).exists() {
            bail!("the packages of {} have no {needed}", kernel.name);
        }
    }
    // modules.dep and friends are made on installation, not shipped.
    crate::run_checked(
        Command::new("depmod")
            .arg("--basedir")
            .arg(&fresh)
            .arg(kernel.release),
    )?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&fresh, &dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A download whose sum is not the pinned one is an error naming both, and is not kept
    /// (the next setup downloads again instead of trusting it); the pinned one is kept.
    #[test]
    fn a_download_is_kept_only_with_its_pinned_sum() {
        let dir = std::env::temp_dir().join(format!("test-kernels-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("debs")).unwrap();
        let served = dir.join("served.deb");
        fs::write(&served, b"not the kernel you pinned").unwrap();
        let url: &'static str = Box::leak(format!("file://{}", served.display()).into_boxed_str());
        let pinned = |sha256: &'static str| Deb {
            file: "k.deb",
            source: Source::Url(url),
            sha256,
        };
        let wrong = "0".repeat(64).leak();
        let error = fetch(&dir.join("debs"), &pinned(wrong))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not the pinned"), "{error}");
        assert!(error.contains(&*wrong), "{error}");
        assert!(
            !dir.join("debs/k.deb").exists(),
            "a bad download is not kept"
        );

        let right = sha256_of(&served).unwrap().leak();
        fetch(&dir.join("debs"), &pinned(right)).unwrap();
        assert!(dir.join("debs/k.deb").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
