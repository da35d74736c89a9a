//! A lab of network namespaces: clients on a LAN switch, a gateway that forwards between its
//! LAN and WAN interfaces (where the classifier attaches), and a server host standing in for
//! the Internet. The demo and the end-to-end tests share it.
//!
//! ```text
//!  client ns (eth0) ─┐
//!  client ns (eth0) ─┤ switch ns (br0) ── lan0 [gateway ns] wan0 ── eth0 [server ns]
//!                    ┘   192.0.2.0/24        forwarding      198.51.100.0/24   203.0.113.0/24
//!                        2001:db8:1::/64                     2001:db8:2::/64   2001:db8:3::/64
//! ```
//!
//! Safety rules the lab keeps: everything lives in namespaces it creates (names start with
//! [`NETNS_PREFIX`]), nothing is created in the root namespace, only documentation address
//! ranges are used, and no namespace has a default route, so nothing can leave the lab.
//! Teardown runs on drop, on SIGINT/SIGTERM (see [`cleanup`]), and `classifier-lab down`
//! removes what a killed run left behind.
//!
//! The lab is its own crate so that none of it ships on gateways: it depends on
//! `classifier-user` (the control socket, the flow store, namespaces), never the other way,
//! and it embeds the BPF objects only tests and benchmarks load (the switch port's
//! pass-through XDP program, the benchmark's floor). The `classifier-lab` binary runs the
//! demo and brings labs up and down.

pub mod cleanup;
pub mod daemon;
pub mod demo;
pub mod http;
mod shell;
pub mod tls;
pub mod topology;
mod xdp_tx;

use std::{
    path::PathBuf,
    process::{Child, Command},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::Context as _;
pub use shell::run as run_command;
pub use topology::{Host, LabSpec};

/// The benchmark's floor (`classifier-ebpf/src/bin/bench_floor.rs`: program
/// `floor_flow_count`): the least an XDP flow counter does. Never attached.
pub static BENCH_FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-floor.o"));

/// Every namespace the lab creates starts with this.
pub const NETNS_PREFIX: &str = "clab-";
/// Pin directories of lab daemons: `/sys/fs/bpf/classifier-lab-<lab id>`.
pub const PIN_DIR_PREFIX: &str = "/sys/fs/bpf/classifier-lab-";

/// A running lab. Dropping it tears it down.
pub struct Lab {
    /// `<owner pid>-<sequence>`: unique on this machine while the owner lives.
    pub id: String,
    pub gateway: Host,
    pub server: Host,
    pub clients: Vec<Host>,
    switch_netns: String,
    /// Whether the gateway masquerades on its WAN interface ([`LabSpec::nat`]).
    pub nat: bool,
    /// Processes started in the lab, stopped before the namespaces go.
    children: Mutex<Vec<Child>>,
    /// On the switch port facing the gateway, so the gateway's XDP_TX resets arrive
    /// ([`LabSpec::xdp_pass_through`]).
    _gateway_port_xdp: Option<xdp_tx::PassThrough>,
}

impl Lab {
    /// Creates the namespaces, links, addresses and routes of `spec`. On failure, whatever
    /// was created is removed before the error returns.
    pub fn up(spec: &LabSpec) -> anyhow::Result<Self> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        anyhow::ensure!(
            (1..=topology::MAX_CLIENTS).contains(&spec.clients),
            "a lab has 1 to {} clients, not {}",
            topology::MAX_CLIENTS,
            spec.clients
        );
        cleanup::install_signal_handler();
        let id = format!(
            "{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let netns = |role: &str| format!("{NETNS_PREFIX}{id}-{role}");
        let mut lab = Self {
            gateway: topology::gateway(netns("gw")),
            server: topology::server(netns("srv")),
            clients: (0..spec.clients)
                .map(|i| topology::client(netns(&format!("c{}", i + 1)), i))
                .collect(),
            switch_netns: netns("sw"),
            children: Mutex::new(Vec::new()),
            _gateway_port_xdp: None,
            nat: spec.nat,
            id,
        };
        cleanup::register(&lab.id, lab.namespaces(), lab.pin_dir());
        topology::build(&lab, spec).with_context(|| format!("bringing up lab {}", lab.id))?;
        if spec.xdp_pass_through {
            lab._gateway_port_xdp = Some(xdp_tx::deliver_xdp_tx_frames(
                &lab.switch_netns,
                topology::SWITCH_GATEWAY_PORT,
            )?);
        }
        Ok(lab)
    }

    /// All of the lab's namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![
            self.switch_netns.clone(),
            self.gateway.netns.clone(),
            self.server.netns.clone(),
        ];
        names.extend(self.clients.iter().map(|c| c.netns.clone()));
        names
    }

    /// One line per host: role, namespace, addresses; for people exploring the lab.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for client in &self.clients {
            text += &format!(
                "  client   {:<22} {} {}\n",
                client.netns, client.ipv4, client.ipv6
            );
        }
        text += &format!(
            "  gateway  {:<22} {} (LAN) + {} (WAN), forwarding{}\n",
            self.gateway.netns,
            topology::GATEWAY_LAN_IFACE,
            topology::GATEWAY_WAN_IFACE,
            if self.nat {
                ", masquerading on the WAN"
            } else {
                ""
            }
        );
        text += &format!(
            "  server   {:<22} {} {}\n",
            self.server.netns, self.server.ipv4, self.server.ipv6
        );
        text
    }

    /// The control socket a daemon in this lab answers on.
    pub fn control_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/classifier/lab-{}.sock", self.id))
    }

    /// Where a daemon in this lab keeps its flow store and an export its audit log;
    /// removed with the lab.
    pub fn data_dir(&self) -> PathBuf {
        cleanup::data_dir(&self.id)
    }

    /// The flow store a daemon in this lab writes.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir().join("flows.sqlite")
    }

    /// The pin directory a daemon in this lab uses.
    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from(format!("{PIN_DIR_PREFIX}{}", self.id))
    }

    /// A command that runs `program` inside `host`'s namespace (`ip netns exec`).
    pub fn command(host: &Host, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &host.netns, program]);
        command
    }

    /// Starts `command` and keeps it, to be stopped at teardown.
    pub fn spawn(&self, mut command: Command) -> anyhow::Result<u32> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Stops the lab's processes and removes its namespaces and pins.
    fn tear_down(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut() {
            shell::stop_child(child);
        }
        children.clear();
        cleanup::remove_lab(&self.id);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.tear_down();
    }
}
