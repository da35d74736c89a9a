//! What each benchmark writes to `target/bench/<name>.json`, as types: the benchmark
//! binaries (`tests/src/bin/*-bench.rs`) write them and `cargo xtask bench-report` reads
//! them back, so a renamed or missing figure is a compile error or a clear read error,
//! never a `NaN` in docs/benchmarks.md.

pub mod datapath {
    use serde::{Deserialize, Serialize};

    /// `target/bench/datapath.json`: the modern build of the BPF programs.
    pub const FILE: &str = "datapath.json";
    /// `target/bench/datapath-legacy.json`: the same benchmark on the legacy build (what
    /// kernels before 5.19, and 6.1, whose verifier refuses the modern build, run).
    pub const FILE_LEGACY: &str = "datapath-legacy.json";

    /// One case under BPF_PROG_TEST_RUN: ns per run and its ratio to the empty XDP program
    /// measured in the same round, median and spread over the rounds.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct CaseResult {
        pub case: String,
        pub median_ns: f64,
        pub min_ns: f64,
        pub max_ns: f64,
        pub median_ratio_to_empty: f64,
        pub min_ratio: f64,
        pub max_ratio: f64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Report {
        pub kernel: String,
        /// The build of the BPF programs measured: `modern` or `legacy`.
        pub build: String,
        pub rounds: usize,
        pub repeat: u32,
        pub empty_xdp_median_ns: f64,
        pub cases: Vec<CaseResult>,
        /// First-payload cases: one fresh flow per sample.
        pub fresh_flow_samples: usize,
        pub fresh_flow_cases: Vec<CaseResult>,
        /// The one-segment ClientHello with this many domains loaded.
        pub list_size_cases: Vec<CaseResult>,
        /// What the kernel accounts for the maps that hold classification state.
        pub memory: Vec<MapMemory>,
        /// The floor (a minimal flow-counting XDP program) on the established flow's frame.
        pub floor: CaseResult,
        /// The established flow's cost ÷ the floor's, round by round (ratio fields).
        pub established_over_floor: CaseResult,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct MapMemory {
        pub map: String,
        pub what: String,
        pub bytes: u64,
    }
}

pub mod scale {
    use serde::{Deserialize, Serialize};

    /// `target/bench/scale.json`.
    pub const FILE: &str = "scale.json";

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Memory {
        pub capacity: usize,
        pub bytes: u64,
        pub bytes_per_flow: f64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Walk {
        pub flows: usize,
        pub cpu_seconds: f64,
        pub ns_per_flow: f64,
        /// CPU time of one walk every 2 s, as a share of one CPU.
        pub share_of_one_cpu: f64,
        /// The same walk two system calls a flow (without BPF_MAP_LOOKUP_BATCH), same run.
        pub by_key_cpu_seconds: f64,
        pub by_key_over_batched: f64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Results {
        pub key_bytes: usize,
        pub entry_bytes: usize,
        pub memory: Vec<Memory>,
        pub walks: Vec<Walk>,
    }
}

pub mod shaping {
    use serde::{Deserialize, Serialize};

    /// `target/bench/shaping.json`.
    pub const FILE: &str = "shaping.json";

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct RateResult {
        pub rate: String,
        pub rate_bps: f64,
        pub classifier_bps: f64,
        pub classifier_ratio: f64,
        pub tbf_bps: f64,
        pub tbf_ratio: f64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct LatencyResult {
        /// Median ping RTT with no shaping set up, ms.
        pub idle_no_shaping_ms: f64,
        /// Median ping RTT while a shaped download fills its class, ms.
        pub under_shaped_load_ms: f64,
        pub ratio: f64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Report {
        pub kernel: String,
        pub seconds_per_run: u32,
        pub rates: Vec<RateResult>,
        pub unshaped_latency: LatencyResult,
    }
}

pub mod store {
    use serde::{Deserialize, Serialize};

    /// `target/bench/store.json`.
    pub const FILE: &str = "store.json";

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Results {
        pub batch: usize,
        pub batched_flows_per_second: f64,
        pub one_per_transaction_flows_per_second: f64,
        pub batched_vs_target: f64,
        pub batched_vs_one_per_transaction: f64,
    }
}

pub mod throughput {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    /// `target/bench/throughput.json`.
    pub const FILE: &str = "throughput.json";

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Row {
        /// Configuration and measure, as docs/benchmarks.md lists them.
        pub name: String,
        pub configuration: String,
        pub measure: String,
        pub unit: String,
        /// One per round, in round order.
        pub samples: Vec<f64>,
        pub median: f64,
        pub min: f64,
        pub max: f64,
        /// This row's median over the `none` median of the same measure.
        pub ratio_to_none: f64,
        /// Each round's sample over that round's `none` sample: median, min, max.
        pub paired_ratio_median: f64,
        pub paired_ratio_min: f64,
        pub paired_ratio_max: f64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Machine {
        pub cpu: String,
        pub cpus: usize,
        pub memory_kib: u64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Report {
        pub machine: Machine,
        pub kernel: String,
        pub date: String,
        pub quick: bool,
        pub iptables: String,
        pub xdp_mode: String,
        /// How long each start of the daemon took to attach, per configuration.
        pub daemon_start_seconds: BTreeMap<String, Vec<f64>>,
        /// The gateway's qdiscs while the daemon ran (`tc qdisc show`), allow-all policy.
        pub classifier_qdiscs: String,
        /// The same with the shipped policy (its HTB for the shape rules).
        pub shipped_qdiscs: String,
        /// The daemon's CPU time (all threads) per new TLS connection, microseconds, per
        /// classifier configuration: × 1,000 connections/s ÷ 10⁶ = the share of one core.
        pub daemon_cpu_us_per_connection: BTreeMap<String, Vec<f64>>,
        pub seconds_per_run: u32,
        pub streams: u32,
        pub repetitions: usize,
        pub handshakes_per_sample: usize,
        pub handshake_budget_seconds: u64,
        pub notes: Vec<String>,
        /// Every (measure, configuration): throughput in Gbit/s, TLS connections per second.
        pub rows: Vec<Row>,
        /// One download with many string rules, not repeated.
        pub heavy_probe: Option<HeavyProbe>,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct HeavyProbe {
        pub rules: usize,
        pub seconds_per_run: u32,
        /// Receiver-side goodput, Gbit/s, when the run ended within its bound.
        pub download_gbps: Option<f64>,
        /// Over the median `none` download of the rounds.
        pub ratio_to_none: Option<f64>,
        /// Setting the rules up, the run until it ended, and removing them.
        pub wall_seconds: f64,
        pub error: Option<String>,
    }
}
