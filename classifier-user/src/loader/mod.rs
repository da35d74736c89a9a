//! Loading the BPF object, pinning its maps and attaching its programs to the gateway's
//! LAN interface.
//!
//! The maps are pinned by name under a pin directory (`/sys/fs/bpf/classifier` by default)
//! so that the flow table outlives the daemon process; a daemon started on an existing pin
//! directory re-uses the maps it finds there. The attachments are pinned too ([`links`]):
//! if the daemon dies, its programs stay attached and keep counting and enforcing, and the
//! next daemon swaps its own programs in atomically. A clean shutdown detaches the programs
//! and removes the pins.

mod links;

pub use crate::kernel_features::{DatapathBuild, DatapathChoice, TcAttachChoice, TcAttachMode};
pub use links::{NETLINK_HANDLE, NETLINK_PRIORITY, TcHook};

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, RingBuf},
    programs::{
        Program, ProgramError, SchedClassifier, Xdp, XdpMode,
        links::{LinkOrder, PinnedLink},
        tc::{self, TcAttachOptions},
    },
};
use classifier_common::{
    config::{Config, fail_fast_replies},
    maps::{self, DOMAINS_DEFAULT_ENTRIES},
    programs::{self, ProgramDef, ProgramKind, ProgramSpec},
};

use crate::{
    bpf_maps::{self, Maps},
    policy::{ClassTables, DatapathSettings},
    preflight::{self, ChosenBuild},
    tables,
};
use tracing::{debug, info, warn};

/// The BPF object built by build.rs from `classifier-ebpf`, embedded in the binary so the
/// kernel side and the user side always come from the same build. The modern build.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/classifier-ebpf.o"));

/// The legacy build of [`EBPF_OBJECT`], for kernels 5.15 to 5.18 (docs/kernels.md).
pub static EBPF_OBJECT_LEGACY: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/classifier-ebpf-legacy.o"));

/// The build this process loads, once chosen: 0 while not, else 1 + [`DatapathBuild`].
static CHOSEN_BUILD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The object of `build`.
pub fn object_of(build: DatapathBuild) -> &'static [u8] {
    match build {
        DatapathBuild::Modern => EBPF_OBJECT,
        DatapathBuild::Legacy => EBPF_OBJECT_LEGACY,
    }
}

/// Makes `build` the one this process loads (`classifier run` and `preflight` choose it
/// from `--datapath` before anything loads).
pub fn use_build(build: DatapathBuild) {
    let code = match build {
        DatapathBuild::Modern => 1,
        DatapathBuild::Legacy => 2,
    };
    CHOSEN_BUILD.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// The build this process loads: the one [`use_build`] set, or else the one
/// `CLASSIFIER_DATAPATH` (default `auto`) means on this kernel, chosen now and kept.
pub fn chosen_build() -> anyhow::Result<DatapathBuild> {
    match CHOSEN_BUILD.load(std::sync::atomic::Ordering::Relaxed) {
        1 => return Ok(DatapathBuild::Modern),
        2 => return Ok(DatapathBuild::Legacy),
        _ => {}
    }
    let build = preflight::datapath_build(DatapathChoice::from_env()?, object_of)?.build;
    use_build(build);
    Ok(build)
}

/// The object of [`chosen_build`].
pub fn ebpf_object() -> anyhow::Result<&'static [u8]> {
    Ok(object_of(chosen_build()?))
}

/// Default directory for the daemon's pinned maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/classifier";

/// aya's type for each kind of program in [`programs`]: what [`Datapath::program`]
/// returns for an entry of that kind.
pub trait AyaProgram: programs::Kind {
    type Program;
    fn of(program: &mut Program) -> Result<&mut Self::Program, ProgramError>;
    fn load(program: &mut Self::Program) -> Result<(), ProgramError>;
}

impl AyaProgram for programs::Xdp {
    type Program = Xdp;
    fn of(program: &mut Program) -> Result<&mut Xdp, ProgramError> {
        program.try_into()
    }
    fn load(program: &mut Xdp) -> Result<(), ProgramError> {
        program.load()
    }
}

impl AyaProgram for programs::Tc {
    type Program = SchedClassifier;
    fn of(program: &mut Program) -> Result<&mut SchedClassifier, ProgramError> {
        program.try_into()
    }
    fn load(program: &mut SchedClassifier) -> Result<(), ProgramError> {
        program.load()
    }
}

/// The program `name` of `ebpf` as aya's type for kind `K`.
fn program_of<'a, K: AyaProgram>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> anyhow::Result<&'a mut K::Program> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("no program `{name}` in the BPF object"))?;
    K::of(program).with_context(|| format!("program `{name}` is not {}", K::KIND))
}

/// Loads (verifies) the program `spec` of `ebpf`; a refusal carries the verifier's log.
pub fn load_program(ebpf: &mut Ebpf, spec: &ProgramSpec) -> anyhow::Result<()> {
    fn load<K: AyaProgram>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<()> {
        K::load(program_of::<K>(ebpf, name)?)
            .with_context(|| format!("the kernel refused {} program `{name}`", K::KIND))
    }
    match spec.kind {
        ProgramKind::Xdp => load::<programs::Xdp>(ebpf, spec.name),
        ProgramKind::Tc => load::<programs::Tc>(ebpf, spec.name),
    }
}

/// The verifier's log, when `error` is the kernel's verifier refusing a program (rather
/// than, say, a map the kernel could not make or pins that do not fit).
fn verifier_log(error: &anyhow::Error) -> Option<&aya_obj::VerifierLog> {
    error
        .chain()
        .find_map(|cause| match cause.downcast_ref::<ProgramError>() {
            Some(ProgramError::LoadError { verifier_log, .. }) => Some(verifier_log),
            _ => None,
        })
}

/// Whether `error` is the kernel's verifier refusing a program.
pub fn verifier_refused(error: &anyhow::Error) -> bool {
    verifier_log(error).is_some()
}

/// What the kernel's verifier said when it refused a program: the last line of its log
/// that is not its statistics (the reason, such as "invalid zero-sized read"), or None when
/// `error` is not a refusal.
pub fn verifier_reason(error: &anyhow::Error) -> Option<String> {
    let log = verifier_log(error)?.to_string();
    let reason = log.lines().map(str::trim).rfind(|line| {
        !line.is_empty()
            && !line.starts_with("processed ")
            && !line.starts_with("verification time")
            && !line.starts_with("stack depth")
    });
    Some(reason.unwrap_or("(the verifier gave no reason)").to_owned())
}

/// A modern build the kernel's verifier refused, and the legacy build loaded instead.
pub struct FellBack {
    pub refused: anyhow::Error,
    /// The legacy build, with the probe of its features.
    pub legacy: ChosenBuild,
}

/// `load()` of the build `chosen`, made the one this process loads; under `--datapath
/// auto`, a modern build this kernel's verifier refuses is followed by the legacy one
/// (checked for its own features first), and the refusal comes back beside what loaded.
/// Some kernels with every feature of the modern build have a verifier that cannot follow
/// parts of it (Debian 12's 6.1: docs/verifier-notes.md), while the legacy build, written
/// for the weaker verifier of 5.15, passes theirs.
pub fn load_falling_back<T>(
    choice: DatapathChoice,
    chosen: DatapathBuild,
    mut load: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Option<FellBack>)> {
    use_build(chosen);
    let refused = match load() {
        Err(error)
            if choice == DatapathChoice::Auto
                && chosen == DatapathBuild::Modern
                && verifier_refused(&error) =>
        {
            error
        }
        loaded => return loaded.map(|loaded| (loaded, None)),
    };
    let legacy = preflight::datapath_build(DatapathChoice::Legacy, object_of)?;
    legacy.require_features()?;
    use_build(legacy.build);
    let loaded = load().with_context(|| {
        format!("loading the legacy build after the modern one was refused ({refused})")
    })?;
    Ok((loaded, Some(FellBack { refused, legacy })))
}

/// How to attach XDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeChoice {
    /// Native (driver) mode, falling back to generic mode when the driver lacks XDP.
    #[default]
    Auto,
    /// Native mode only: fail if the driver cannot run XDP.
    Native,
    /// Generic (skb) mode: works on any interface, slower.
    Generic,
}

/// The mode XDP ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    Native,
    Generic,
}

impl std::fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "interface `{iface}` already has an XDP program: see it with `bpftool net show dev \
         {iface}` and detach it, or stop the classifier that runs there"
    )]
    XdpBusy { iface: String },
    #[error("attaching XDP to `{iface}` in {mode} mode")]
    Xdp {
        iface: String,
        mode: XdpAttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {hook} to `{iface}`")]
    Tc {
        iface: String,
        hook: links::TcHook,
        #[source]
        source: ProgramError,
    },
    #[error("pinning or adopting the {what} attachment of `{iface}` (in the pin directory)")]
    Pin {
        iface: String,
        what: &'static str,
        #[source]
        source: links::PinError,
    },
}

/// The loaded datapath: programs, maps and, once attached, the links that hold the programs
/// on the interface (dropping the `Ebpf` detaches them).
pub struct Datapath {
    /// The programs, and the maps only the kernel side uses.
    ebpf: Ebpf,
    /// Handles on the maps the daemon uses, taken once at load.
    maps: Maps,
    /// The pin directory (pinned datapaths only).
    pin_dir: Option<PathBuf>,
    /// Pinned attachments (pinned datapaths only), released on a clean shutdown.
    links: Vec<PinnedLink>,
    /// Where each attached interface's links are pinned (pinned datapaths only).
    link_pins: Vec<links::LinkPins>,
    /// The attachments were a previous daemon's, taken over.
    adopted: bool,
    /// How the datapath checks segment checksums, when the interface decides it rather
    /// than the policy ([`Datapath::set_checksums`]).
    checksums: Option<u8>,
    /// How fail-fast answers go out, once the daemon has chosen for the interface
    /// ([`Datapath::set_fail_fast_replies`]).
    fail_fast_replies: Option<u8>,
    /// How TC programs that are not taken over get attached.
    tc_attach: TcAttachMode,
    /// Our clsact filters (the netlink way), taken off on a clean shutdown.
    netlink_filters: Vec<(links::LinkPins, TcHook)>,
    /// The build of the BPF programs loaded.
    build: DatapathBuild,
}

impl Datapath {
    /// Loads the object with private, unpinned maps: for tests, benchmarks and offline use.
    pub fn load() -> anyhow::Result<Self> {
        Self::load_sized(DOMAINS_DEFAULT_ENTRIES as u32)
    }

    /// [`Datapath::load`] with room for `domains` domain entries.
    pub fn load_sized(domains: u32) -> anyhow::Result<Self> {
        let build = chosen_build()?;
        let ebpf = EbpfLoader::new()
            .map_max_entries(maps::DOMAINS.name(), domains)
            .load(object_of(build))
            .context("loading the BPF object")?;
        Self::ready(ebpf, build, None)
    }

    /// Loads the object with its maps pinned under `pin_dir`, re-using maps already pinned
    /// there, and room for `domains` domain entries in a new domain table. On failure, a pin
    /// directory this call created is removed again.
    pub fn load_pinned(pin_dir: &Path, domains: u32) -> anyhow::Result<Self> {
        let created = !pin_dir.exists();
        std::fs::create_dir_all(pin_dir)
            .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
        let loaded = chosen_build().and_then(|build| {
            let ebpf = Self::load_with_pins(object_of(build), pin_dir, domains)?;
            Self::ready(ebpf, build, Some(pin_dir.to_owned()))
        });
        if loaded.is_err() && created {
            remove_pins(pin_dir);
        }
        loaded
    }

    /// The loaded object made ready to attach: the map handles taken, every program
    /// loaded (verified), the tail-call table filled and the settings defaulted.
    fn ready(
        mut ebpf: Ebpf,
        build: DatapathBuild,
        pin_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let maps = Maps::take(&mut ebpf)?;
        let mut datapath = Self {
            ebpf,
            maps,
            pin_dir,
            links: Vec::new(),
            link_pins: Vec::new(),
            adopted: false,
            checksums: None,
            fail_fast_replies: None,
            tc_attach: TcAttachMode::Tcx,
            netlink_filters: Vec::new(),
            build,
        };
        datapath.load_programs()?;
        datapath.default_config()?;
        Ok(datapath)
    }

    fn load_with_pins(object: &[u8], pin_dir: &Path, domains: u32) -> anyhow::Result<Ebpf> {
        check_pinned_maps(pin_dir, domains)?;
        let paths: Vec<(&str, PathBuf)> = maps::pinned_names()
            .map(|name| (name, pin_dir.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::DOMAINS.name(), domains);
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader.load(object).with_context(|| {
            format!(
                "loading the BPF object with maps pinned in {}",
                pin_dir.display()
            )
        })
    }

    /// Loads (verifies) every program in the object and fills the tail-call table.
    fn load_programs(&mut self) -> anyhow::Result<()> {
        for spec in programs::ALL {
            load_program(&mut self.ebpf, spec)?;
        }
        for (index, def) in programs::TAIL_CALLS {
            let name = def.name();
            let fd = self
                .program(def)?
                .fd()
                .with_context(|| format!("{name} has no file descriptor"))?
                .try_clone()
                .with_context(|| format!("duplicating {name}'s file descriptor"))?;
            self.maps
                .classifiers
                .set(index, &fd, 0)
                .with_context(|| format!("installing {name} as tail call {index}"))?;
        }
        Ok(())
    }

    /// The program `def`, as aya's type for its kind: for attaching or
    /// `BPF_PROG_TEST_RUN`.
    pub fn program<K: AyaProgram>(
        &mut self,
        def: ProgramDef<K>,
    ) -> anyhow::Result<&mut K::Program> {
        program_of::<K>(&mut self.ebpf, def.name())
    }

    /// The build of the BPF programs loaded.
    pub fn build(&self) -> DatapathBuild {
        self.build
    }

    /// The handles on the datapath's maps.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// The handles on the datapath's maps, to change them.
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Attaches XDP to the LAN interface's ingress and TC to its egress. A pinned datapath
    /// pins its attachments, or takes over those a previous daemon left on `iface`.
    pub fn attach_lan(
        &mut self,
        iface: &str,
        mode: XdpModeChoice,
    ) -> Result<XdpAttachMode, AttachError> {
        let pins = self.link_pins_for(iface);
        let xdp_mode = self.attach_xdp(iface, mode, pins.as_ref())?;
        self.attach_tc(iface, programs::LAN_EGRESS, TcHook::Egress, pins.as_ref())?;
        self.link_pins.extend(pins);
        Ok(xdp_mode)
    }

    /// Attaches TC to the WAN interface's egress, where uploads are shaped; pinned and
    /// taken over on restart as the LAN attachments are.
    pub fn attach_wan(&mut self, iface: &str) -> Result<(), AttachError> {
        let pins = self.link_pins_for(iface);
        self.attach_tc(iface, programs::WAN_EGRESS, TcHook::Egress, pins.as_ref())?;
        self.link_pins.extend(pins);
        Ok(())
    }

    /// Makes fail-fast answers leave the LAN interface `iface` the way `way` says
    /// ([`fail_fast_replies`]), in an order that never leaves an answer without a way out:
    /// for TC, `lan_replies` goes on the interface's ingress before the datapath marks
    /// answers for it; for XDP_TX, the datapath stops marking before a `lan_replies` a
    /// previous daemon left is taken off.
    pub fn send_fail_fast_replies(&mut self, iface: &str, way: u8) -> anyhow::Result<()> {
        let pins = self.link_pins_for(iface);
        if way == fail_fast_replies::TC_REDIRECT {
            self.attach_tc(iface, programs::LAN_REPLIES, TcHook::Ingress, pins.as_ref())?;
            return self.set_fail_fast_replies(way);
        }
        self.set_fail_fast_replies(way)?;
        let Some(pins) = pins else { return Ok(()) };
        if take_off_left_tc(&pins, TcHook::Ingress)? {
            info!(
                interface = iface,
                "took off the previous daemon's TC ingress program: answers go out by XDP_TX"
            );
        }
        Ok(())
    }

    /// Hands uploads over to the WAN side across address translation
    /// ([`classifier_common::nat`]) with `config`, or stops (config off): the settings are
    /// written before `lan_nat_mark` goes on the LAN interface's ingress, first in its
    /// chain (so it runs whatever else is there), and a previous daemon's is taken off when
    /// the hand-over is off.
    pub fn hand_over_nat(
        &mut self,
        iface: &str,
        config: classifier_common::nat::NatConfig,
    ) -> anyhow::Result<()> {
        let pins = self.link_pins_for(iface);
        self.maps
            .nat_config
            .set(0, config, 0)
            .with_context(|| format!("writing {}", maps::NAT_CONFIG.name()))?;
        if config.is_on() {
            self.attach_tc(
                iface,
                programs::LAN_NAT_MARK,
                TcHook::NatIngress,
                pins.as_ref(),
            )?;
            return Ok(());
        }
        if let Some(pins) = &pins
            && take_off_left_tc(pins, TcHook::NatIngress)?
        {
            info!(
                interface = iface,
                "took off the previous daemon's NAT hand-over (no --nat-mark-mask)"
            );
        }
        Ok(())
    }

    /// How fail-fast answers go out from now on (a [`fail_fast_replies`] value), kept over
    /// later table installs: it is the interface's property, not the policy's. Attaches
    /// nothing (see [`Datapath::send_fail_fast_replies`]); on its own, for tests.
    pub fn set_fail_fast_replies(&mut self, way: u8) -> anyhow::Result<()> {
        self.fail_fast_replies = Some(way);
        self.update_config(|config| config.fail_fast_replies = way)
    }

    fn link_pins_for(&self, iface: &str) -> Option<links::LinkPins> {
        self.pin_dir
            .as_ref()
            .map(|pin_dir| links::LinkPins::new(pin_dir, iface))
    }

    /// Makes TC programs attached from now on TCX links or clsact filters. Attachments a
    /// previous daemon left are taken over as they are, whichever way they were made.
    pub fn set_tc_attach(&mut self, mode: TcAttachMode) {
        self.tc_attach = mode;
    }

    /// How TC programs not taken over are attached.
    pub fn tc_attach(&self) -> TcAttachMode {
        self.tc_attach
    }

    /// How the TC programs ended up on the interfaces: as clsact filters if any is one
    /// (made here or taken over), else as TCX links.
    pub fn tc_attached(&self) -> TcAttachMode {
        if self.netlink_filters.is_empty() {
            TcAttachMode::Tcx
        } else {
            TcAttachMode::Netlink
        }
    }

    /// True when the programs went into attachments a previous daemon left.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        mode: XdpModeChoice,
        link_pins: Option<&links::LinkPins>,
    ) -> Result<XdpAttachMode, AttachError> {
        let pin_error = |source| AttachError::Pin {
            iface: iface.to_owned(),
            what: "XDP",
            source,
        };
        let existing = link_pins.and_then(|p| p.existing_xdp());
        let program = program_of::<programs::Xdp>(&mut self.ebpf, programs::LAN_INGRESS.name())
            .expect("lan_ingress is loaded by Datapath::load*");
        if let Some((path, pinned_mode)) = existing {
            let pinned = links::adopt(&path, |link| program.attach_to_link(link).map(drop))
                .map_err(pin_error)?;
            self.links.push(pinned);
            self.adopted = true;
            info!(interface = iface, xdp_mode = %pinned_mode, "took over the XDP attachment a previous daemon left");
            return Ok(pinned_mode);
        }
        let (link_id, attached_mode) = attach_xdp_fresh(program, iface, mode)?;
        if let Some(pins) = link_pins {
            let link = program
                .take_link(link_id)
                .map_err(|e| pin_error(Box::new(e)))?;
            let pinned = pins.pin_xdp(link, attached_mode).map_err(pin_error)?;
            self.links.push(pinned);
        }
        Ok(attached_mode)
    }

    fn attach_tc(
        &mut self,
        iface: &str,
        def: ProgramDef<programs::Tc>,
        hook: TcHook,
        link_pins: Option<&links::LinkPins>,
    ) -> Result<(), AttachError> {
        let pin_error = |source| AttachError::Pin {
            iface: iface.to_owned(),
            what: match hook {
                TcHook::Egress => "TC egress",
                TcHook::Ingress => "TC ingress",
                TcHook::NatIngress => "TC ingress (NAT hand-over)",
            },
            source,
        };
        let existing = link_pins.and_then(|p| p.existing_tc(hook).map(|left| (p, left)));
        let tc_attach = self.tc_attach;
        let program = program_of::<programs::Tc>(&mut self.ebpf, def.name())
            .expect("the TC programs are loaded by Datapath::load*");
        let tc_error = |source| AttachError::Tc {
            iface: iface.to_owned(),
            hook,
            source,
        };
        match existing {
            Some((_, links::LeftTc::Tcx(path))) => {
                let pinned = links::adopt(&path, |link| program.attach_to_link(link).map(drop))
                    .map_err(pin_error)?;
                self.links.push(pinned);
            }
            Some((pins, links::LeftTc::Netlink(path))) => {
                let adopted = pins
                    .adopt_netlink(program, hook, &path)
                    .map_err(pin_error)?;
                self.netlink_filters.push((pins.clone(), hook));
                if !adopted {
                    return Ok(());
                }
            }
            None => {
                match (tc_attach, link_pins) {
                    (TcAttachMode::Netlink, Some(pins)) => {
                        pins.attach_netlink(program, hook).map_err(pin_error)?;
                        self.netlink_filters.push((pins.clone(), hook));
                    }
                    (TcAttachMode::Netlink, None) => {
                        // Unpinned (tests): the filter goes when the program is dropped.
                        let _ = tc::qdisc_add_clsact(iface);
                        program
                            .attach_with_options(iface, hook.attach_type(), hook.netlink_options())
                            .map_err(tc_error)?;
                    }
                    (TcAttachMode::Tcx, pins) => {
                        // The NAT hand-over comes first: the fail-fast answers' program
                        // ends the hook's chain.
                        let order = if hook == TcHook::NatIngress {
                            LinkOrder::first()
                        } else {
                            LinkOrder::default()
                        };
                        let options = TcAttachOptions::TcxOrder(order);
                        let link_id = program
                            .attach_with_options(iface, hook.attach_type(), options)
                            .map_err(tc_error)?;
                        if let Some(pins) = pins {
                            let link = program
                                .take_link(link_id)
                                .map_err(|e| pin_error(Box::new(e)))?;
                            let pinned = pins.pin_tc(link, hook).map_err(pin_error)?;
                            self.links.push(pinned);
                        }
                    }
                }
                debug!(interface = iface, program = def.name(), hook = %hook, tc_attach = %tc_attach, "attached");
                return Ok(());
            }
        }
        info!(
            interface = iface,
            program = def.name(),
            hook = %hook,
            "took over the TC attachment a previous daemon left"
        );
        Ok(())
    }

    /// The category and application ids the datapath's flows were classified with.
    pub fn class_ids(&self) -> crate::policy::ClassIds {
        tables::read_class_ids(&self.maps.class_ids)
    }

    /// Writes the policy's lookup tables and settings into the datapath's maps, removing
    /// entries the policy no longer has.
    pub fn install_tables(
        &mut self,
        tables: &ClassTables,
        settings: &DatapathSettings,
    ) -> anyhow::Result<()> {
        let mut config = settings.config;
        if let Some(checksums) = self.checksums {
            config.checksums = checksums;
        }
        if let Some(way) = self.fail_fast_replies {
            config.fail_fast_replies = way;
        }
        tables::install(&mut self.maps, tables, &config)?;
        tables::install_lan_prefixes(&mut self.maps.lan_prefixes, &settings.lan_prefixes)
    }

    /// How segment checksums are checked from now on (a `config::checksums` value), kept
    /// over later table installs: it is the interface's property, not the policy's.
    pub fn set_checksums(&mut self, checksums: u8) -> anyhow::Result<()> {
        self.checksums = Some(checksums);
        self.update_config(|config| config.checksums = checksums)
    }

    /// A new `CONFIG` (all zeros: no checksums checked, no quotas, nothing inspected) gets
    /// the defaults until a policy's settings are installed; a pinned one that a running
    /// datapath uses keeps its settings.
    fn default_config(&mut self) -> anyhow::Result<()> {
        self.update_config(|config| {
            if *config == Config::UNSET {
                *config = Config::default();
            }
        })
    }

    /// Empties the tables that hold what the datapath learnt from traffic: flows, stream
    /// buffers, fragments, the peer cache, per-client quotas and allowances, the daemon's
    /// answers, the kept names. The policy's tables stay. For replaying one capture after another, each
    /// from a datapath that has seen nothing (their flows may share addresses and ports).
    pub fn forget_traffic(&mut self) {
        let maps = &mut self.maps;
        clear(&mut maps.flows);
        clear(&mut maps.reassembly);
        clear(&mut maps.fragments);
        clear(&mut maps.peers);
        clear(&mut maps.sources);
        clear(&mut maps.buckets);
        clear(&mut maps.class_results);
        clear(&mut maps.names);
        clear(&mut maps.public_sources);
    }

    /// Changes the datapath settings in force (until the next table install writes the
    /// policy's).
    pub fn update_config(&mut self, change: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
        let settings = &mut self.maps.config;
        let mut config = settings
            .get(&0, 0)
            .context("reading the datapath settings")?;
        change(&mut config);
        settings
            .set(0, config, 0)
            .context("writing the datapath settings")?;
        Ok(())
    }

    /// Makes `tables` the policy in force (see [`tables::swap_policy`]); returns the new
    /// generation.
    pub fn swap_policy(&mut self, tables: &tables::DecisionTables) -> anyhow::Result<u32> {
        tables::swap_policy(&mut self.maps, tables)
    }

    /// The ring buffer of events, taken out so the daemon can wait on it on its own.
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        self.maps.take_events()
    }

    /// Entries the domain table has room for.
    pub fn domain_capacity(&self) -> anyhow::Result<u32> {
        use aya::maps::IterableMap as _;
        Ok(self
            .maps
            .domains
            .map()
            .info()
            .context("reading the domain table's size")?
            .max_entries())
    }

    /// Detaches the programs and removes the pinned attachments and maps.
    pub fn shutdown(self) -> anyhow::Result<()> {
        let Self {
            ebpf,
            maps,
            pin_dir,
            links,
            link_pins,
            netlink_filters,
            ..
        } = self;
        // Dropping the Ebpf closes the programs' own descriptors (and unpinned links, which
        // detaches them); a pinned link goes once its pin is removed as well.
        drop(ebpf);
        drop(maps);
        for link in links {
            links::release(link).context("removing a pinned attachment")?;
        }
        for (pins, hook) in &netlink_filters {
            pins.detach_netlink(*hook)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("taking our {hook} filter off `{}`", pins.iface()))?;
        }
        for link_pins in link_pins {
            link_pins
                .remove_clsact_if_ours()
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("removing the clsact qdisc of `{}`", link_pins.iface()))?;
            link_pins
                .remove_dirs()
                .context("removing the attachments' pin directory")?;
        }
        if let Some(pin_dir) = pin_dir {
            unpin_all(&pin_dir)?;
        }
        Ok(())
    }
}

/// The category and application ids of a datapath pinned under `pin_dir` (none if there is
/// none): a policy loaded with them gives every name the id the running flows know it by.
pub fn pinned_class_ids(pin_dir: &Path) -> anyhow::Result<crate::policy::ClassIds> {
    if !bpf_maps::pin_path(pin_dir, maps::CLASS_IDS).exists() {
        return Ok(Default::default());
    }
    let map: HashMap<MapData, _, _> = bpf_maps::from_pin(pin_dir, maps::CLASS_IDS)?;
    Ok(tables::read_class_ids(&map))
}

/// Removes every entry of `table`.
fn clear<K: aya::Pod, V: aya::Pod>(table: &mut HashMap<MapData, K, V>) {
    // Keys first: deleting while walking would restart the walk.
    let keys: Vec<K> = table.keys().filter_map(Result::ok).collect();
    for key in keys {
        // Gone already (an LRU eviction) is as good as removed.
        let _ = table.remove(&key);
    }
}

/// Fails with the fix when maps a previous daemon pinned cannot serve this one: a map of
/// another type or layout (another version: its key or value size differs from this
/// object's), or a domain table too small for the policy. Every
/// pinned map is checked against this object's own definition of it. Adopted as they are,
/// such maps would be refused by the verifier at best, and misread at worst (a layout
/// change that keeps every size gets a new map name instead: see `maps::NAMES`).
fn check_pinned_maps(pin_dir: &Path, domains: u32) -> anyhow::Result<()> {
    use aya::maps::MapInfo;
    let object = aya_obj::Object::parse(ebpf_object()?).context("reading the BPF object's maps")?;
    let fix = format!(
        "stop any daemon using {dir}, then remove it (`rm -r {dir}`; flow counters start \
         again from zero) and start again",
        dir = pin_dir.display()
    );
    for name in maps::pinned_names() {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let ours = object
            .maps
            .get(name)
            .with_context(|| format!("the BPF object has no map {name}"))?;
        let info =
            MapInfo::from_pin(&path).with_context(|| format!("reading {}", path.display()))?;
        let pinned = MapLayout {
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        let ours = MapLayout {
            map_type: ours.map_type(),
            key_size: ours.key_size(),
            value_size: ours.value_size(),
            max_entries: ours.max_entries(),
        };
        let room_for = (name == maps::DOMAINS.name()).then_some(domains);
        if let Some(why) = layout_mismatch(&pinned, &ours, room_for) {
            anyhow::bail!(
                "the {name} map pinned in {} cannot serve this classifier version: {why}: {fix}",
                pin_dir.display()
            );
        }
    }
    Ok(())
}

/// What adopting a pinned map depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MapLayout {
    /// `bpf_map_type`.
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

/// Why a map pinned as `pinned` cannot stand in for this object's `ours`, if it cannot: its
/// type, or the size of its keys or values, differ (this version would misread it), or it
/// has no room for `room_for` entries (the domain table, sized to the policy's lists). A
/// map of another number of entries otherwise still serves.
fn layout_mismatch(pinned: &MapLayout, ours: &MapLayout, room_for: Option<u32>) -> Option<String> {
    if pinned.map_type != ours.map_type {
        return Some(format!(
            "it is a map of type {}, this version's is of type {}",
            pinned.map_type, ours.map_type
        ));
    }
    if (pinned.key_size, pinned.value_size) != (ours.key_size, ours.value_size) {
        return Some(format!(
            "{}-byte keys and {}-byte values; this version uses {} and {}",
            pinned.key_size, pinned.value_size, ours.key_size, ours.value_size
        ));
    }
    let needed = room_for.unwrap_or(0);
    (pinned.max_entries < needed).then(|| {
        format!(
            "it has room for {} entries; this policy needs {needed}",
            pinned.max_entries
        )
    })
}

/// Takes off the TC program a previous daemon left on `hook` of `pins`' interface (a TCX
/// link or our clsact filter), if there is one: whether there was.
fn take_off_left_tc(pins: &links::LinkPins, hook: TcHook) -> anyhow::Result<bool> {
    let Some(leftover) = pins.existing_tc(hook) else {
        return Ok(false);
    };
    let taken_off = match &leftover {
        links::LeftTc::Tcx(path) => PinnedLink::from_pin(path)
            .map_err(anyhow::Error::from)
            .and_then(|link| Ok(links::release(link)?)),
        links::LeftTc::Netlink(_) => pins.detach_netlink(hook).map_err(|e| anyhow::anyhow!(e)),
    };
    taken_off.with_context(|| {
        format!(
            "taking off the {hook} program a previous daemon left on `{}` ({leftover:?})",
            pins.iface()
        )
    })?;
    Ok(true)
}

fn attach_xdp_fresh(
    program: &mut Xdp,
    iface: &str,
    mode: XdpModeChoice,
) -> Result<(aya::programs::xdp::XdpLinkId, XdpAttachMode), AttachError> {
    let mut attach = |mode: XdpAttachMode| {
        let flags = match mode {
            XdpAttachMode::Native => XdpMode::Driver,
            XdpAttachMode::Generic => XdpMode::Skb,
        };
        program
            .attach(iface, flags)
            .map(|id| (id, mode))
            .map_err(|source| xdp_attach_error(iface, mode, source))
    };
    match mode {
        XdpModeChoice::Native => attach(XdpAttachMode::Native),
        XdpModeChoice::Generic => attach(XdpAttachMode::Generic),
        XdpModeChoice::Auto => match attach(XdpAttachMode::Native) {
            Err(AttachError::Xdp { source, .. }) => {
                warn!(
                    interface = iface,
                    reason = %error_chain(&source),
                    "native XDP unavailable, falling back to generic XDP (slower)"
                );
                attach(XdpAttachMode::Generic)
            }
            other => other,
        },
    }
}

fn xdp_attach_error(iface: &str, mode: XdpAttachMode, source: ProgramError) -> AttachError {
    let busy = match &source {
        ProgramError::SyscallError(e) => {
            e.io_error.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32)
        }
        _ => error_chain(&source).contains("Device or resource busy"),
    };
    if busy {
        AttachError::XdpBusy {
            iface: iface.to_owned(),
        }
    } else {
        AttachError::Xdp {
            iface: iface.to_owned(),
            mode,
            source,
        }
    }
}

/// "outer: inner: innermost", for one-line logs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes our pins from `dir`, then `dir` itself if nothing else is left in it.
fn unpin_all(dir: &Path) -> anyhow::Result<()> {
    for name in maps::pinned_names() {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("unpinning {}", path.display())),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => debug!(pin_dir = %dir.display(), "maps unpinned"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(pin_dir = %dir.display(), error = %e, "pin directory not removed (not empty?)")
        }
    }
    Ok(())
}

/// Best-effort [`unpin_all`] on an error path, where the first error is the one to report.
fn remove_pins(dir: &Path) {
    if let Err(e) = unpin_all(dir) {
        warn!(error = %format!("{e:#}"), "cleaning up after a failed start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use classifier_common::names::{FlowName, NameKey};

    const LRU_HASH: u32 = aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32;

    fn names_layout() -> MapLayout {
        MapLayout {
            map_type: LRU_HASH,
            key_size: size_of::<NameKey>() as u32,
            value_size: size_of::<FlowName>() as u32,
            max_entries: maps::NAMES_MAX_ENTRIES as u32,
        }
    }

    #[test]
    fn a_pinned_map_of_another_layout_or_type_is_refused() {
        let ours = names_layout();
        assert_eq!(layout_mismatch(&ours, &ours, None), None);
        let older = MapLayout {
            value_size: ours.value_size - 8,
            ..ours
        };
        let why = layout_mismatch(&older, &ours, None).expect("refused");
        assert!(
            why.contains("264-byte values") && why.contains("272"),
            "{why}"
        );
        let other_type = MapLayout {
            map_type: LRU_HASH + 1,
            ..ours
        };
        assert!(layout_mismatch(&other_type, &ours, None).is_some());
    }

    #[test]
    fn a_map_of_another_size_serves_unless_the_policy_needs_more_room() {
        let ours = names_layout();
        let smaller = MapLayout {
            max_entries: 1024,
            ..ours
        };
        assert_eq!(layout_mismatch(&smaller, &ours, None), None, "an LRU");
        let why = layout_mismatch(&smaller, &ours, Some(4096)).expect("no room");
        assert!(why.contains("this policy needs 4096"), "{why}");
        assert_eq!(layout_mismatch(&smaller, &ours, Some(1024)), None);
    }

    /// Where the list `list` and the BPF object `object` disagree: a map of the object
    /// not listed, or listed with another kind, key or value size or (where fixed) size; a
    /// listed map not in the object; a map the object pins by itself (the list decides).
    fn map_list_problems(object: &aya_obj::Object, list: &[maps::MapSpec]) -> Vec<String> {
        use aya_obj::maps::PinningType;
        let mut problems = Vec::new();
        for (name, ours) in &object.maps {
            if name.starts_with('.') {
                continue; // .rodata, .bss: globals, not maps of the list
            }
            let Some(listed) = list.iter().find(|spec| spec.name == name) else {
                problems.push(format!("{name} is in the object but not in the list"));
                continue;
            };
            // A size the list leaves open (kernel-only scratch values, the domain table's
            // entries) is not compared.
            let value_size = listed
                .value_size
                .map_or(ours.value_size(), |size| size as u32);
            let entries = listed.max_entries.map_or(ours.max_entries(), |n| n as u32);
            let list_says = (
                listed.kind as u32,
                listed.key_size as u32,
                value_size,
                entries,
            );
            let object_says = (
                ours.map_type(),
                ours.key_size(),
                ours.value_size(),
                ours.max_entries(),
            );
            if object_says != list_says {
                problems.push(format!(
                    "{name}: the object has (type, key, value, entries) {object_says:?}, \
                     the list {list_says:?}"
                ));
            }
            if !matches!(ours.pinning(), PinningType::None) {
                problems.push(format!("{name} is pinned by the object itself"));
            }
        }
        for listed in list {
            if !object.maps.contains_key(listed.name) {
                problems.push(format!("{} is listed but not in the object", listed.name));
            }
        }
        problems
    }

    /// `classifier_common::maps::ALL` is the list of maps of both objects (the modern and
    /// the legacy build share the pinned maps, so a daemon of either can take over).
    #[test]
    fn the_map_list_is_the_objects() {
        for bytes in [EBPF_OBJECT, super::EBPF_OBJECT_LEGACY] {
            let object = aya_obj::Object::parse(bytes).unwrap();
            let problems = map_list_problems(&object, maps::ALL);
            assert!(problems.is_empty(), "{problems:#?}");
            // The domain table is the one the loader sizes: the object declares the default.
            assert_eq!(
                object.maps[maps::DOMAINS.name()].max_entries(),
                DOMAINS_DEFAULT_ENTRIES as u32
            );
        }
    }

    /// The check above sees each way a list can be wrong.
    #[test]
    fn a_wrong_map_list_is_caught() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).unwrap();
        let problems_with = |change: &dyn Fn(&mut Vec<maps::MapSpec>)| {
            let mut list = maps::ALL.to_vec();
            change(&mut list);
            map_list_problems(&object, &list)
        };
        fn flows(list: &[maps::MapSpec]) -> usize {
            list.iter().position(|m| m.name == "FLOWS").unwrap()
        }
        let missing = problems_with(&|list| {
            let at = flows(list);
            list.remove(at);
        });
        assert_eq!(missing, ["FLOWS is in the object but not in the list"]);
        let bigger_value = problems_with(&|list| {
            let at = flows(list);
            list[at].value_size = Some(size_of::<classifier_common::flow::FlowEntry>() + 8);
        });
        assert_eq!(bigger_value.len(), 1, "{bigger_value:?}");
        assert!(bigger_value[0].starts_with("FLOWS: "), "{bigger_value:?}");
        let other_kind = problems_with(&|list| {
            let at = flows(list);
            list[at].kind = maps::MapKind::Hash;
        });
        assert_eq!(other_kind.len(), 1, "{other_kind:?}");
        let other_size = problems_with(&|list| {
            let at = flows(list);
            list[at].max_entries = Some(1024);
        });
        assert_eq!(other_size.len(), 1, "{other_size:?}");
        let renamed = problems_with(&|list| {
            let at = flows(list);
            list[at].name = "FLOW_TABLE";
        });
        assert_eq!(
            renamed,
            [
                "FLOWS is in the object but not in the list",
                "FLOW_TABLE is listed but not in the object"
            ]
        );
    }

    /// Where the program list `list` and the BPF object `object` disagree: a program of
    /// the object not listed, or listed as another kind; a listed program not in the
    /// object.
    fn program_list_problems(
        object: &aya_obj::Object,
        list: &[programs::ProgramSpec],
    ) -> Vec<String> {
        use aya_obj::ProgramSection;
        let mut problems = Vec::new();
        let mut names: Vec<&String> = object.programs.keys().collect();
        names.sort();
        for name in names {
            let kind = match object.programs[name].section {
                ProgramSection::Xdp { .. } => Some(ProgramKind::Xdp),
                ProgramSection::SchedClassifier => Some(ProgramKind::Tc),
                _ => None,
            };
            match list.iter().find(|spec| spec.name == name) {
                None => problems.push(format!("{name} is in the object but not in the list")),
                Some(listed) if Some(listed.kind) != kind => problems.push(format!(
                    "{name}: the object has a {:?} program, the list {}",
                    object.programs[name].section, listed.kind
                )),
                Some(_) => {}
            }
        }
        for listed in list {
            if !object.programs.contains_key(listed.name) {
                problems.push(format!("{} is listed but not in the object", listed.name));
            }
        }
        problems
    }

    /// `classifier_common::programs::ALL` is the list of programs of both objects (the
    /// modern and the legacy build load and attach the same programs).
    #[test]
    fn the_program_list_is_the_objects() {
        for bytes in [EBPF_OBJECT, super::EBPF_OBJECT_LEGACY] {
            let object = aya_obj::Object::parse(bytes).unwrap();
            let problems = program_list_problems(&object, programs::ALL);
            assert!(problems.is_empty(), "{problems:#?}");
        }
    }

    /// The check above sees each way the program list can be wrong.
    #[test]
    fn a_wrong_program_list_is_caught() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).unwrap();
        let problems_with = |change: &dyn Fn(&mut Vec<programs::ProgramSpec>)| {
            let mut list = programs::ALL.to_vec();
            change(&mut list);
            program_list_problems(&object, &list)
        };
        let at = |list: &[programs::ProgramSpec]| {
            list.iter()
                .position(|p| p.name == programs::LAN_EGRESS.name())
                .unwrap()
        };
        let missing = problems_with(&|list| {
            let i = at(list);
            list.remove(i);
        });
        assert_eq!(missing, ["lan_egress is in the object but not in the list"]);
        let other_kind = problems_with(&|list| {
            let i = at(list);
            list[i].kind = ProgramKind::Xdp;
        });
        assert_eq!(other_kind.len(), 1, "{other_kind:?}");
        assert!(other_kind[0].starts_with("lan_egress: "), "{other_kind:?}");
        let renamed = problems_with(&|list| {
            let i = at(list);
            list[i].name = "lan_egress_v2";
        });
        assert_eq!(
            renamed,
            [
                "lan_egress is in the object but not in the list",
                "lan_egress_v2 is listed but not in the object"
            ]
        );
    }
}

/// The kernel features the embedded object needs, read by `kernel_features`.
#[cfg(test)]
mod kernel_needs {
    use aya::programs::ProgramType;
    use aya_obj::generated::bpf_map_type;

    use super::{EBPF_OBJECT, EBPF_OBJECT_LEGACY};
    use crate::kernel_features::{Since, helper_by_id, map_kind_by_id, needs, required_since};

    fn name_of(id: u32) -> &'static str {
        helper_by_id(id).map_or("?", |h| h.name)
    }

    fn helpers_called(object: &[u8]) -> Vec<&'static str> {
        let needs = needs(object).unwrap();
        needs.helpers.iter().map(|(id, _)| name_of(*id)).collect()
    }

    /// The legacy build calls none of the helpers 5.15 lacks, and their stand-ins instead.
    #[test]
    fn the_legacy_object_calls_nothing_newer_than_5_13() {
        let needs = needs(EBPF_OBJECT_LEGACY).unwrap();
        assert!(
            needs.unknown_helpers.is_empty(),
            "{:?}",
            needs.unknown_helpers
        );
        assert_eq!(needs.kfunc_calls, 0);
        let called = helpers_called(EBPF_OBJECT_LEGACY);
        for newer in [
            "bpf_loop",
            "bpf_xdp_load_bytes",
            "bpf_dynptr_from_mem",
            "bpf_dynptr_read",
        ] {
            assert!(!called.contains(&newer), "{newer} in {called:?}");
        }
        for stand_in in ["bpf_for_each_map_elem", "bpf_probe_read_kernel"] {
            assert!(called.contains(&stand_in), "{stand_in} not in {called:?}");
        }
        assert_eq!(required_since(&needs), Since(5, 13));
        // ... and the modern build none of the stand-ins.
        let modern = helpers_called(EBPF_OBJECT);
        for stand_in in ["bpf_for_each_map_elem", "bpf_probe_read_kernel"] {
            assert!(!modern.contains(&stand_in), "{stand_in} in {modern:?}");
        }
    }

    #[test]
    fn every_helper_the_object_calls_is_in_the_table() {
        let needs = needs(EBPF_OBJECT).unwrap();
        let unknown: Vec<u32> = needs.unknown_helpers.iter().copied().collect();
        assert!(
            unknown.is_empty(),
            "helpers {unknown:?} are called but not in HELPERS: add each with the kernel \
             that brought it"
        );
        assert_eq!(
            needs.kfunc_calls, 0,
            "kfuncs need a probe of their own (BTF ids)"
        );
        for id in &needs.map_types {
            assert!(
                map_kind_by_id(*id).is_some(),
                "map type {id} not in MAP_KINDS"
            );
        }
        // The scan sees what the source is known to use, where it is used.
        let called: Vec<&str> = needs.helpers.iter().map(|(id, _)| name_of(*id)).collect();
        for wanted in [
            "bpf_loop",
            "bpf_xdp_load_bytes",
            "bpf_dynptr_read",
            "bpf_ringbuf_reserve",
            "bpf_redirect",
        ] {
            assert!(called.contains(&wanted), "{wanted} not found in {called:?}");
        }
        let redirect = needs
            .helpers
            .iter()
            .find(|(id, _)| name_of(*id) == "bpf_redirect")
            .unwrap();
        assert!(
            redirect.1.contains(&ProgramType::SchedClassifier),
            "bpf_redirect is lan_replies' (TC): {redirect:?}"
        );
        assert!(
            needs
                .map_types
                .contains(&(bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32))
        );
        assert!(
            needs
                .map_types
                .contains(&(bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32))
        );
    }

    #[test]
    fn the_readme_states_the_minimum_kernel_the_object_needs() {
        let minimum = required_since(&needs(EBPF_OBJECT).unwrap());
        assert_eq!(
            minimum,
            Since(5, 19),
            "the datapath's minimum kernel changed: update the README's \"Kernels\" and \
             docs/kernels.md, then this test"
        );
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&format!("kernel {minimum} or later")),
            "the README states the minimum kernel ({minimum})"
        );
        // The legacy build's features date from 5.13; it is verified on 5.15, the oldest
        // kernel the README promises.
        assert!(
            readme.contains("kernel 5.15 or later"),
            "the README states the legacy build's minimum kernel"
        );
    }
}
