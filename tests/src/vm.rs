//! Booting a stock distribution kernel under qemu and running a shell script in it, as root,
//! on this host's own files: the tests that try the product on the kernels gateways run
//! (tests/tests/distro_kernels.rs, docs/kernels.md).
//!
//! The VM's root is an overlay: this host's `/`, shared read-only over 9p, under a tmpfs, so
//! the script sees the binaries, the test binaries and the tools exactly where they are here
//! and nothing it writes reaches the host. The kernel's own modules (from the test-kernel
//! cache that `cargo xtask setup` fills) are bound over `/lib/modules/<release>`, so the
//! kernel loads what the lab needs (veth, sch_ingress, cls_bpf, nf_tables...) by itself.
//! The VM has no network card: the lab's traffic stays in namespaces inside it. Its output
//! comes back through a second, writable 9p share of a temporary directory.
//!
//! qemu runs in software emulation (TCG): nested KVM is not available on every machine that
//! runs the tests, and TCG behaves the same everywhere.

use std::{
    fs,
    io::Cursor,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Where `cargo xtask setup` keeps the test kernels (xtask/src/test_kernels.rs);
/// $CLASSIFIER_TEST_KERNELS overrides it.
pub const DEFAULT_KERNEL_CACHE: &str = "/var/cache/classifier-test-kernels";

/// Modules the VM's first stage loads itself, to reach the host's files: the rest the kernel
/// loads from the shared tree on demand.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

const QEMU: &str = "qemu-system-x86_64";
const BUSYBOX: &str = "/bin/busybox";

/// The directory of the test kernels.
pub fn kernel_cache() -> PathBuf {
    std::env::var_os("CLASSIFIER_TEST_KERNELS")
        .map_or_else(|| DEFAULT_KERNEL_CACHE.into(), PathBuf::from)
}

/// A kernel unpacked in the cache: `boot/vmlinuz-<release>` and `lib/modules/<release>`.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub release: String,
    pub dir: PathBuf,
}

impl Kernel {
    /// The kernel called `name` in the cache, or what is missing.
    pub fn cached(name: &str) -> anyhow::Result<Kernel> {
        let dir = kernel_cache().join(name);
        if !dir.join(".complete").exists() {
            bail!(
                "the test kernel {name} is not in {}: run `cargo xtask setup` (as root) to \
                 fetch it",
                kernel_cache().display()
            );
        }
        let release = fs::read_dir(dir.join("lib/modules"))
            .with_context(|| format!("listing {}/lib/modules", dir.display()))?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .find(|release| dir.join("boot").join(format!("vmlinuz-{release}")).exists())
            .with_context(|| format!("no kernel with its modules in {}", dir.display()))?;
        Ok(Kernel {
            name: name.into(),
            release,
            dir,
        })
    }

    fn vmlinuz(&self) -> PathBuf {
        self.dir
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    fn modules(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.release)
    }
}

/// What is missing on this machine to boot test kernels, if anything.
pub fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    if Command::new(QEMU).arg("--version").output().is_err() {
        missing.push(format!("{QEMU} (package qemu-system-x86)"));
    }
    if !Path::new(BUSYBOX).exists() {
        missing.push(format!("{BUSYBOX} (package busybox-static)"));
    }
    (!missing.is_empty()).then(|| {
        format!(
            "missing {}: run `cargo xtask setup` (as root)",
            missing.join(", ")
        )
    })
}

/// How a script ended in the VM.
#[derive(Debug)]
pub struct Outcome {
    /// The script's exit code.
    pub exit_code: i32,
    /// What it wrote to stdout and stderr.
    pub output: String,
    /// The kernel's console (boot messages, oopses), for the reader of a failure.
    pub console: String,
    pub took: Duration,
}

/// Boots `kernel`, runs `script` (bash) as root inside, and powers off. Fails when the VM
/// does not come back with the script's exit code within `time_limit`; qemu is killed then,
/// and whatever happens, the temporary directory is removed.
pub fn run(kernel: &Kernel, script: &str, time_limit: Duration) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let work = TempDir::new(&format!("classifier-vm-{}", kernel.name))?;
    let out = work.path().join("out");
    fs::create_dir(&out)?;
    let initrd = work.path().join("initrd.gz");
    fs::write(&initrd, initramfs(kernel, script)?)?;
    let console_log = work.path().join("console.log");
    let qemu = Qemu::boot(kernel, &initrd, &out, &console_log)?;
    let finished = qemu.wait(time_limit)?;
    let console = fs::read_to_string(&console_log)
        .unwrap_or_default()
        .replace('\r', "");
    let output = fs::read_to_string(out.join("output")).unwrap_or_default();
    let exit_code = fs::read_to_string(out.join("exit-code"))
        .ok()
        .and_then(|code| code.trim().parse().ok());
    match (finished, exit_code) {
        (true, Some(exit_code)) => Ok(Outcome {
            exit_code,
            output,
            console,
            took: started.elapsed(),
        }),
        (true, None) => bail!(
            "the {} VM stopped without the script's exit code\n--- output\n{output}\n--- \
             console\n{}",
            kernel.name,
            tail(&console, 60)
        ),
        (false, _) => bail!(
            "the {} VM did not finish within {time_limit:?}: killed\n--- output\n{}\n--- \
             console\n{}",
            kernel.name,
            tail(&output, 80),
            tail(&console, 60)
        ),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running qemu, killed when dropped.
struct Qemu {
    child: Child,
}

impl Qemu {
    fn boot(kernel: &Kernel, initrd: &Path, out: &Path, console: &Path) -> anyhow::Result<Qemu> {
        let share = |id: &str, path: &Path, read_only: bool| {
            [
                "-fsdev".to_owned(),
                format!(
                    "local,id={id},path={},security_model=none{}",
                    path.display(),
                    // Host / spans several file systems: remap their inode numbers apart.
                    if read_only {
                        ",readonly=on,multidevs=remap"
                    } else {
                        ""
                    }
                ),
                "-device".to_owned(),
                format!("virtio-9p-pci,fsdev={id},mount_tag={id}"),
            ]
        };
        let child = Command::new(QEMU)
            .args(["-accel", "tcg,thread=multi", "-cpu", "max"])
            .args(["-m", "2G", "-smp", "2"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            // No network card: nothing in the VM reaches any network.
            .args(["-nic", "none"])
            .arg("-kernel")
            .arg(kernel.vmlinuz())
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
            .args(share("host", Path::new("/"), true))
            .args(share("out", out, false))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {QEMU}"))?;
        Ok(Qemu { child })
    }

    /// Whether qemu ended (the VM powered off or panicked) within `limit`.
    fn wait(mut self, limit: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<TempDir> {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The first stage, busybox's shell in the initramfs: load the modules that reach the host's
/// files, build the overlay root, bind the kernel's modules into it, and switch to it. The
/// second stage (PID 1 from then on) runs the script, keeps its output and exit code in the
/// output share, and powers off.
const FIRST_STAGE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
for module in $(cat /modules/order); do
    insmod "/modules/$module" || echo "vm: insmod $module failed"
done
mkdir -p /lower /upper /new
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro host /lower || exec poweroff -f
mount -t tmpfs upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay root -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /new
# The kernel's modules before the tmpfs goes on /run, which would hide a cache there. No
# tmpfs on /tmp: the overlay keeps writes there off the host already, and a checkout under
# /tmp (a CI clone) must stay visible.
release=$(uname -r)
mkdir -p "/new/lib/modules/$release"
mount --bind "/new$(cat /modules-dir)" "/new/lib/modules/$release" || exec poweroff -f
mount -t tmpfs run /new/run
mkdir -p /new/run/vm-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /new/run/vm-out || exec poweroff -f
cp /bin/busybox /second-stage /script /new/run/
for d in proc sys dev; do mount --move /$d /new/$d; done
exec switch_root /new /bin/bash /run/second-stage
"#;

const SECOND_STAGE: &str = r#"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm
ip link set lo up
cd /tmp
bash /run/script > /run/vm-out/output 2>&1 < /dev/null
echo $? > /run/vm-out/exit-code
sync
umount /run/vm-out
/run/busybox poweroff -f
"#;

/// The gzipped newc archive the kernel unpacks as its first root.
fn initramfs(kernel: &Kernel, script: &str) -> anyhow::Result<Vec<u8>> {
    let mut entries: Vec<(cpio::NewcBuilder, Cursor<Vec<u8>>)> = Vec::new();
    let mut dir = |name: &str| {
        entries.push((
            cpio::NewcBuilder::new(name)
                .mode(0o755)
                .set_mode_file_type(cpio::newc::ModeFileType::Directory),
            Cursor::new(Vec::new()),
        ));
    };
    for name in ["bin", "dev", "proc", "sys", "modules"] {
        dir(name);
    }
    let mut file = |name: &str, mode: u32, contents: Vec<u8>| {
        entries.push((
            cpio::NewcBuilder::new(name)
                .mode(mode)
                .set_mode_file_type(cpio::newc::ModeFileType::Regular),
            Cursor::new(contents),
        ));
    };
    file(
        "bin/busybox",
        0o755,
        fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX}"))?,
    );
    file("init", 0o755, FIRST_STAGE.into());
    file("second-stage", 0o644, SECOND_STAGE.into());
    file("script", 0o644, script.into());
    file(
        "modules-dir",
        0o644,
        kernel.modules().to_string_lossy().into_owned().into(),
    );
    let mut order = String::new();
    for module in boot_modules(&kernel.modules())? {
        let (name, contents) = module_file(&kernel.modules().join(&module))?;
        file(&format!("modules/{name}"), 0o644, contents);
        order.push_str(&name);
        order.push('\n');
    }
    file("modules/order", 0o644, order.into());
    let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let gzip = cpio::write_cpio(entries.into_iter(), gzip).context("writing the initramfs")?;
    Ok(gzip.finish()?)
}

/// The files of [`BOOT_MODULES`] that are modules (not built in), with what they depend on
/// first, as the kernel's modules.dep lists them.
fn boot_modules(modules: &Path) -> anyhow::Result<Vec<String>> {
    let dep_file = modules.join("modules.dep");
    let deps =
        fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?;
    let deps: Vec<(&str, Vec<&str>)> = deps
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, needs)| (module, needs.split_whitespace().collect()))
        .collect();
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let mut ordered = Vec::new();
    for wanted in BOOT_MODULES {
        match deps.iter().find(|(path, _)| module_name(path) == *wanted) {
            Some((path, _)) => add_with_deps(path, &deps, &mut ordered),
            None if builtin.lines().any(|path| module_name(path) == *wanted) => {}
            None => bail!("{wanted} is neither a module nor built into the kernel"),
        }
    }
    Ok(ordered)
}

/// A module's file name and contents, decompressed: busybox's insmod loads plain `.ko`
/// files only, and distributions compress theirs (Debian 13 and 12's backports with xz,
/// Ubuntu 24.04 with zstd).
fn module_file(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let file = path
        .file_name()
        .context("a module's path ends in its file")?
        .to_string_lossy()
        .into_owned();
    let decompressor = match file.rsplit_once(".ko.") {
        None => {
            let contents = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            return Ok((file, contents));
        }
        Some((_, "xz")) => "xz",
        Some((_, "zst")) => "zstd",
        Some((_, other)) => bail!(
            "{}: modules compressed with {other} are not known here",
            path.display()
        ),
    };
    let output = Command::new(decompressor)
        .args(["--decompress", "--stdout"])
        .arg(path)
        .output()
        .with_context(|| format!("running {decompressor} on {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "{decompressor} could not decompress {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let name = file
        .rsplit_once(".ko.")
        .map_or(file.clone(), |(stem, _)| format!("{stem}.ko"));
    Ok((name, output.stdout))
}

fn add_with_deps(path: &str, deps: &[(&str, Vec<&str>)], ordered: &mut Vec<String>) {
    if ordered.iter().any(|done| done == path) {
        return;
    }
    if let Some((_, needs)) = deps.iter().find(|(p, _)| *p == path) {
        for need in needs {
            add_with_deps(need, deps, ordered);
        }
    }
    ordered.push(path.to_owned());
}

/// `kernel/fs/9p/9p.ko` -> `9p`; dashes and underscores are one to the kernel.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The newest build of the test binary `name` (an integration test of this package), beside
/// the running test binary: tests run in the VM are the suite's own, built on this host.
pub fn sibling_test_binary(name: &str) -> anyhow::Result<PathBuf> {
    let deps = std::env::current_exe()?
        .parent()
        .context("the test binary's directory")?
        .to_path_buf();
    let prefix = format!("{name}-");
    let newest = fs::read_dir(&deps)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            file.strip_prefix(&prefix)
                .is_some_and(|hash| hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max();
    match newest {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no build of the test {name} in {}: build it with `cargo test -p classifier-tests \
             --test {name} --no-run` (or run the tests with `cargo xtask test`)",
            deps.display()
        ),
    }
}
