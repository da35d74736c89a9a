//! What the datapath needs of the kernel, read from the BPF object itself, and whether the
//! running kernel has it: every BPF helper the programs call, every map type they define,
//! kernel BTF, and TCX links (without which TC programs go on as clsact filters instead).
//!
//! The version each feature first appeared in comes from the kernel's own record of it:
//! the `bpf_func_id` and `bpf_map_type` lists of `include/uapi/linux/bpf.h` (helpers are
//! numbered in the order they were merged) and the table kept from it in BCC's
//! `docs/kernel-versions.md` ("BPF Features by Linux Kernel Version"), which cites the
//! commit of each. Whether the running kernel has a feature is not worked out from its
//! version (distribution kernels backport): it is probed, the way libbpf and bpftool do,
//! by loading a tiny program that calls the helper, creating a map of the type, asking
//! for the TCX programs of `lo`.

use std::collections::BTreeSet;

use aya::{
    maps::MapType,
    programs::{ProgramType, TcAttachType, tc::SchedClassifier},
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};
use aya_obj::{Object, ProgramSection, generated::bpf_map_type};

/// Names features to treat as missing (comma-separated, e.g. `tcx,bpf_loop`): for tests
/// of the error path and of the netlink path on a kernel that has everything.
pub const PRETEND_MISSING_ENV: &str = "CLASSIFIER_PRETEND_KERNEL_LACKS";

/// A kernel version, as `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Since(pub u32, pub u32);

impl std::fmt::Display for Since {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// One BPF helper: its `bpf_func_id`, its name, the first kernel that has it.
pub struct Helper {
    pub id: BpfHelper,
    pub name: &'static str,
    pub since: Since,
}

const fn helper(id: BpfHelper, name: &'static str, since: Since) -> Helper {
    Helper { id, name, since }
}

/// Helpers the datapath calls (and a few near them), with the kernel that added each
/// (BCC docs/kernel-versions.md, "Helpers"). A helper the object calls that is not here
/// fails the `every_helper_the_object_calls_is_in_the_table` test: add it with its version.
pub const HELPERS: &[Helper] = &[
    helper(
        BpfHelper::BPF_FUNC_map_lookup_elem,
        "bpf_map_lookup_elem",
        Since(3, 19),
    ),
    helper(
        BpfHelper::BPF_FUNC_map_update_elem,
        "bpf_map_update_elem",
        Since(3, 19),
    ),
    helper(
        BpfHelper::BPF_FUNC_map_delete_elem,
        "bpf_map_delete_elem",
        Since(3, 19),
    ),
    helper(
        BpfHelper::BPF_FUNC_ktime_get_ns,
        "bpf_ktime_get_ns",
        Since(4, 1),
    ),
    helper(
        BpfHelper::BPF_FUNC_get_prandom_u32,
        "bpf_get_prandom_u32",
        Since(4, 1),
    ),
    helper(
        BpfHelper::BPF_FUNC_get_smp_processor_id,
        "bpf_get_smp_processor_id",
        Since(4, 1),
    ),
    helper(BpfHelper::BPF_FUNC_tail_call, "bpf_tail_call", Since(4, 2)),
    helper(BpfHelper::BPF_FUNC_redirect, "bpf_redirect", Since(4, 4)),
    helper(
        BpfHelper::BPF_FUNC_skb_load_bytes,
        "bpf_skb_load_bytes",
        Since(4, 5),
    ),
    helper(BpfHelper::BPF_FUNC_csum_diff, "bpf_csum_diff", Since(4, 6)),
    helper(
        BpfHelper::BPF_FUNC_skb_pull_data,
        "bpf_skb_pull_data",
        Since(4, 9),
    ),
    helper(
        BpfHelper::BPF_FUNC_xdp_adjust_head,
        "bpf_xdp_adjust_head",
        Since(4, 10),
    ),
    helper(
        BpfHelper::BPF_FUNC_xdp_adjust_meta,
        "bpf_xdp_adjust_meta",
        Since(4, 15),
    ),
    helper(
        BpfHelper::BPF_FUNC_xdp_adjust_tail,
        "bpf_xdp_adjust_tail",
        Since(4, 18),
    ),
    helper(
        BpfHelper::BPF_FUNC_fib_lookup,
        "bpf_fib_lookup",
        Since(4, 18),
    ),
    helper(
        BpfHelper::BPF_FUNC_probe_read_kernel,
        "bpf_probe_read_kernel",
        Since(5, 5),
    ),
    helper(
        BpfHelper::BPF_FUNC_ringbuf_output,
        "bpf_ringbuf_output",
        Since(5, 8),
    ),
    helper(
        BpfHelper::BPF_FUNC_ringbuf_reserve,
        "bpf_ringbuf_reserve",
        Since(5, 8),
    ),
    helper(
        BpfHelper::BPF_FUNC_ringbuf_submit,
        "bpf_ringbuf_submit",
        Since(5, 8),
    ),
    helper(
        BpfHelper::BPF_FUNC_ringbuf_discard,
        "bpf_ringbuf_discard",
        Since(5, 8),
    ),
    helper(
        BpfHelper::BPF_FUNC_ringbuf_query,
        "bpf_ringbuf_query",
        Since(5, 8),
    ),
    helper(
        BpfHelper::BPF_FUNC_ktime_get_coarse_ns,
        "bpf_ktime_get_coarse_ns",
        Since(5, 11),
    ),
    helper(
        BpfHelper::BPF_FUNC_for_each_map_elem,
        "bpf_for_each_map_elem",
        Since(5, 13),
    ),
    helper(BpfHelper::BPF_FUNC_loop, "bpf_loop", Since(5, 17)),
    helper(
        BpfHelper::BPF_FUNC_xdp_load_bytes,
        "bpf_xdp_load_bytes",
        Since(5, 18),
    ),
    helper(
        BpfHelper::BPF_FUNC_xdp_store_bytes,
        "bpf_xdp_store_bytes",
        Since(5, 18),
    ),
    helper(
        BpfHelper::BPF_FUNC_dynptr_from_mem,
        "bpf_dynptr_from_mem",
        Since(5, 19),
    ),
    helper(
        BpfHelper::BPF_FUNC_dynptr_read,
        "bpf_dynptr_read",
        Since(5, 19),
    ),
    helper(
        BpfHelper::BPF_FUNC_dynptr_write,
        "bpf_dynptr_write",
        Since(5, 19),
    ),
];

/// One map type: its `bpf_map_type`, aya's name for probing it, the kernel that added it
/// (BCC docs/kernel-versions.md, "Tables (a.k.a. Maps)").
pub struct MapKind {
    pub id: bpf_map_type,
    pub probe: MapType,
    pub name: &'static str,
    pub since: Since,
}

const fn map_kind(id: bpf_map_type, probe: MapType, name: &'static str, since: Since) -> MapKind {
    MapKind {
        id,
        probe,
        name,
        since,
    }
}

/// Map types the datapath defines (and a few near them).
pub const MAP_KINDS: &[MapKind] = &[
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_HASH,
        MapType::Hash,
        "hash map",
        Since(3, 19),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        MapType::Array,
        "array map",
        Since(3, 19),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY,
        MapType::ProgramArray,
        "program array (tail calls)",
        Since(4, 2),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_PERCPU_HASH,
        MapType::PerCpuHash,
        "per-CPU hash map",
        Since(4, 6),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY,
        MapType::PerCpuArray,
        "per-CPU array",
        Since(4, 6),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_LRU_HASH,
        MapType::LruHash,
        "LRU hash map",
        Since(4, 10),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_LRU_PERCPU_HASH,
        MapType::LruPerCpuHash,
        "per-CPU LRU hash map",
        Since(4, 10),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_LPM_TRIE,
        MapType::LpmTrie,
        "LPM trie",
        Since(4, 11),
    ),
    map_kind(
        bpf_map_type::BPF_MAP_TYPE_RINGBUF,
        MapType::RingBuf,
        "ring buffer",
        Since(5, 8),
    ),
];

/// How to attach the TC programs (`--tc-attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TcAttachChoice {
    /// TCX links where the kernel has them (6.6 and later), else clsact filters.
    #[default]
    Auto,
    /// TCX links only: fail on a kernel without them.
    Tcx,
    /// Filters of a clsact qdisc, made over netlink, as kernels before 6.6 need.
    Netlink,
}

/// Which build of the BPF programs to load (`--datapath`, [`DATAPATH_ENV`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathChoice {
    /// The modern build where the kernel has everything it uses, else the legacy one.
    #[default]
    Auto,
    /// The modern build: kernel 5.19 or later (`bpf_loop`, `bpf_xdp_load_bytes`, dynptrs).
    Modern,
    /// The legacy build, for kernels 5.15 to 5.18; runs on newer ones too (for tests).
    Legacy,
}

/// Sets [`DatapathChoice`] where no `--datapath` is given (and for everything that loads
/// the datapath without one: the lab, the tests).
pub const DATAPATH_ENV: &str = "CLASSIFIER_DATAPATH";

impl DatapathChoice {
    /// The choice [`DATAPATH_ENV`] makes (`auto` when unset); an unknown value is an error
    /// naming the ones there are.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var(DATAPATH_ENV) {
            Err(_) => Ok(Self::Auto),
            Ok(value) => <Self as clap::ValueEnum>::from_str(value.trim(), true).map_err(|_| {
                anyhow::anyhow!("{DATAPATH_ENV}={value}: expected auto, modern or legacy")
            }),
        }
    }
}

/// A build of the BPF programs: the same programs and maps, made for different kernels
/// (docs/kernels.md, "The legacy build").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatapathBuild {
    /// Kernel 5.19 or later.
    Modern,
    /// Kernels 5.15 to 5.18: `bpf_for_each_map_elem` for `bpf_loop`,
    /// `bpf_probe_read_kernel` for `bpf_xdp_load_bytes` and dynptrs.
    Legacy,
}

impl std::fmt::Display for DatapathBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatapathBuild::Modern => "modern",
            DatapathBuild::Legacy => "legacy",
        })
    }
}

/// How TC programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAttachMode {
    /// TCX links (kernel 6.6 and later).
    Tcx,
    /// Filters of a clsact qdisc, over netlink (any kernel).
    Netlink,
}

impl std::fmt::Display for TcAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcAttachMode::Tcx => "tcx",
            TcAttachMode::Netlink => "netlink",
        })
    }
}

/// Kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF).
pub const BTF: Since = Since(5, 4);
/// TCX links for TC programs (`BPF_TCX_INGRESS`/`EGRESS`).
pub const TCX: Since = Since(6, 6);

/// What the object needs, read from its instructions and map definitions.
#[derive(Debug, Default)]
pub struct Needs {
    /// (helper id, program types that call it).
    pub helpers: Vec<(u32, Vec<ProgramType>)>,
    /// `bpf_map_type` values.
    pub map_types: BTreeSet<u32>,
    /// Helper ids called that [`HELPERS`] does not know.
    pub unknown_helpers: BTreeSet<u32>,
    /// Kernel functions (kfuncs) called: none today, each would need its own probe.
    pub kfunc_calls: usize,
}

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `src_reg` of a call to another BPF function (not a helper).
const PSEUDO_CALL: u8 = 1;
/// `src_reg` of a call to a kernel function.
const PSEUDO_KFUNC_CALL: u8 = 2;

/// Reads what `object` (an ELF BPF object) needs of the kernel. A helper called from a
/// program's own section counts for that program type; one called from shared code
/// (`.text`) for every program type of the object.
pub fn needs(object: &[u8]) -> anyhow::Result<Needs> {
    let object = Object::parse(object)?;
    let mut section_types = std::collections::BTreeMap::new();
    for program in object.programs.values() {
        if let Some(kind) = program_type(&program.section) {
            section_types.insert(program.section_index, kind);
        }
    }
    let mut all_types: Vec<ProgramType> = Vec::new();
    for kind in section_types.values() {
        if !all_types.contains(kind) {
            all_types.push(*kind);
        }
    }
    let mut needs = Needs::default();
    let mut helpers: std::collections::BTreeMap<u32, Vec<ProgramType>> = Default::default();
    for function in object.functions.values() {
        let callers = section_types
            .get(&function.section_index.0)
            .map_or_else(|| all_types.clone(), |kind| vec![*kind]);
        for insn in function.instructions.iter().filter(|i| i.code == CALL) {
            match insn.src_reg() {
                0 => {
                    let id = insn.imm as u32;
                    let types = helpers.entry(id).or_default();
                    for kind in &callers {
                        if !types.contains(kind) {
                            types.push(*kind);
                        }
                    }
                    if helper_by_id(id).is_none() {
                        needs.unknown_helpers.insert(id);
                    }
                }
                PSEUDO_CALL => {}
                PSEUDO_KFUNC_CALL => needs.kfunc_calls += 1,
                _ => {}
            }
        }
    }
    needs.helpers = helpers.into_iter().collect();
    needs.map_types = object.maps.values().map(|map| map.map_type()).collect();
    Ok(needs)
}

fn program_type(section: &ProgramSection) -> Option<ProgramType> {
    match section {
        ProgramSection::Xdp { .. } => Some(ProgramType::Xdp),
        ProgramSection::SchedClassifier => Some(ProgramType::SchedClassifier),
        _ => None,
    }
}

pub fn helper_by_id(id: u32) -> Option<&'static Helper> {
    HELPERS.iter().find(|h| h.id as u32 == id)
}

pub fn map_kind_by_id(id: u32) -> Option<&'static MapKind> {
    MAP_KINDS.iter().find(|m| m.id as u32 == id)
}

/// A feature the kernel was found to lack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub name: String,
    pub since: Since,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (needs {}+)", self.name, self.since)
    }
}

/// One line of the report: a feature, its kernel, whether this kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    pub name: String,
    pub since: Since,
    pub present: bool,
    /// Required (the datapath cannot load without it) or only preferred (TCX).
    pub required: bool,
}

/// Probes the running kernel for everything `needs` lists, plus BTF and TCX. Features
/// named in [`PRETEND_MISSING_ENV`] are reported missing whatever the kernel has.
pub fn probe(needs: &Needs, btf_present: bool) -> anyhow::Result<Vec<Probed>> {
    let pretend = pretended_missing();
    let lacks = |name: &str| pretend.iter().any(|p| p == name);
    let mut report = vec![Probed {
        name: "kernel BTF".into(),
        since: BTF,
        present: btf_present && !lacks("btf"),
        required: true,
    }];
    for (id, types) in &needs.helpers {
        let Some(helper) = helper_by_id(*id) else {
            anyhow::bail!("the BPF object calls helper {id}, which the probe table does not know");
        };
        let mut present = false;
        for kind in types {
            if is_helper_supported(*kind, helper.id)? {
                present = true;
                break;
            }
        }
        report.push(Probed {
            name: helper.name.into(),
            since: helper.since,
            present: present && !lacks(helper.name),
            required: true,
        });
    }
    for id in &needs.map_types {
        let Some(kind) = map_kind_by_id(*id) else {
            anyhow::bail!(
                "the BPF object defines a map of type {id}, which the probe table does not know"
            );
        };
        report.push(Probed {
            name: kind.name.into(),
            since: kind.since,
            present: is_map_supported(kind.probe)? && !lacks(kind.name),
            required: true,
        });
    }
    report.push(Probed {
        name: "TCX".into(),
        since: TCX,
        present: has_tcx() && !lacks("tcx"),
        required: false,
    });
    Ok(report)
}

/// Whether the kernel has TCX: it answers a query for the TCX programs of `lo` (which
/// every network namespace has); a kernel without TCX refuses the attach type. Changes
/// nothing.
pub fn has_tcx() -> bool {
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok()
}

/// Whether TCX is to be treated as missing ([`PRETEND_MISSING_ENV`]).
pub fn tcx_pretended_missing() -> bool {
    pretended_missing().iter().any(|p| p == "tcx")
}

fn pretended_missing() -> Vec<String> {
    std::env::var(PRETEND_MISSING_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The required features the report says are missing.
pub fn missing(report: &[Probed]) -> Vec<Missing> {
    report
        .iter()
        .filter(|p| p.required && !p.present)
        .map(|p| Missing {
            name: p.name.clone(),
            since: p.since,
        })
        .collect()
}

/// The oldest kernel with every required feature.
pub fn minimum_kernel(report: &[Probed]) -> Since {
    report
        .iter()
        .filter(|p| p.required)
        .map(|p| p.since)
        .max()
        .unwrap_or(Since(0, 0))
}

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "(unknown)".into())
}

/// The oldest kernel with everything `needs` lists (and BTF), by the tables alone.
pub fn required_since(needs: &Needs) -> Since {
    let helpers = needs
        .helpers
        .iter()
        .filter_map(|(id, _)| helper_by_id(*id).map(|h| h.since));
    let maps = needs
        .map_types
        .iter()
        .filter_map(|id| map_kind_by_id(*id).map(|m| m.since));
    helpers.chain(maps).fold(BTF, Since::max)
}
