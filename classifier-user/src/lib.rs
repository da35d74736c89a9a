//! The user side of the gateway traffic classifier: the daemon (`classifier run`), the
//! command-line tool around it. (The network-namespace lab the demo and tests use is the
//! `classifier-lab` crate, which depends on this one: nothing of it ships on gateways.)
//!
//! Modules are named after what they do:
//! - [`preflight`]: the checks that make a start fail early with a fix in the message;
//! - [`kernel_features`]: what the BPF object needs of the kernel, probed;
//! - [`netns`]: entering network namespaces;
//! - [`loader`]: loading the BPF object, pinning its maps, attaching its programs;
//! - [`policy`]: the policy file: categories, applications, domains, ports;
//! - [`tables`]: writing a policy's lookup tables into the datapath's maps;
//! - [`bpf_maps`]: typed handles on the maps, named by the one list in `classifier_common::maps`;
//! - [`events`]: what the datapath reports through its ring buffer;
//! - [`bittorrent`]: tracker replies read for the peer cache;
//! - [`flows`]: reading the flow table into records people can read, and when flows end;
//! - [`store`]: ended flows in an SQLite file, retention, the queries exports use;
//! - [`metrics`]: the datapath's global counters;
//! - [`replay`]: captures run through the real datapath offline (`classify-pcap`);
//! - [`shaping`]: the HTB qdiscs and classes shape verdicts put packets into (netlink);
//! - [`list_import`]: UT1 / Shallalist lists downloaded, checked and swapped in;
//! - [`in_force`]: the policy in force: period, generation, reload;
//! - [`export`]: investigation exports (CSV, JSON Lines, IPFIX), their audit log, live IPFIX;
//! - [`degradation`]: the bandwidth-degradation log per interval, and running totals;
//! - [`recorder`]: ended flows out of the table and into the store, the retention job;
//! - [`daemon`]: the running daemon's state, event handling and reporting;
//! - [`control`]: the control socket the CLI asks the daemon through;
//! - [`service`]: life under systemd: readiness notifications, log priorities;
//! - [`cli`]: the subcommands.

pub mod bittorrent;
pub mod bpf_maps;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod degradation;
pub mod events;
pub mod export;
pub mod flows;
pub mod in_force;
pub mod kernel_features;
pub mod list_import;
pub mod loader;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod policy;
pub mod preflight;
pub mod quic;
pub mod recorder;
pub mod replay;
pub mod service;
pub mod shaping;
pub mod store;
pub mod tables;
