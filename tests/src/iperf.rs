//! iperf3 across the lab gateway: servers on the lab's server host, clients on its client
//! hosts, results read from iperf3's JSON.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use classifier_lab::{Host, Lab};

/// Starts an iperf3 server on `port` of the lab's server host; the lab stops it.
pub fn serve(lab: &Lab, port: u16) {
    let mut command = Lab::command(&lab.server, "iperf3");
    command
        .args(["--server", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn(command).expect("iperf3 server starts");
    // Bounded wait for the listening socket: a client that comes first is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let listening = Lab::command(&lab.server, "ss")
            .args(["-Htln", &format!("sport = :{port}")])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if listening {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("iperf3 server on port {port} did not start listening");
}

/// Which way the test data goes, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Server → client (`--reverse`): a download through the gateway's LAN egress.
    Download,
    /// Client → server: an upload through the gateway's WAN egress.
    Upload,
}

/// An iperf3 client running in the background. Its output is read as it comes (a long
/// run's JSON outgrows a pipe's buffer).
pub struct Run {
    pid: u32,
    output: std::sync::mpsc::Receiver<std::io::Result<Output>>,
    seconds: u32,
}

/// Starts an iperf3 client on `client` against `server:port` for `seconds`, reporting
/// every `interval_ms`.
pub fn start(
    client: &Host,
    server: Ipv4Addr,
    port: u16,
    way: Way,
    seconds: u32,
    interval_ms: u32,
) -> Run {
    let mut command: Command = Lab::command(client, "iperf3");
    command
        .args(["--client", &server.to_string(), "--port", &port.to_string()])
        .args(["--time", &seconds.to_string()])
        .args(["--interval", &format!("{}", interval_ms as f64 / 1000.0)])
        .args(["--connect-timeout", "3000", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if way == Way::Download {
        command.arg("--reverse");
    }
    let child: Child = command.spawn().expect("iperf3 client starts");
    let pid = child.id();
    let (send, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(child.wait_with_output()));
    Run {
        pid,
        output,
        seconds,
    }
}

/// What an iperf3 run measured, on the receiving side.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Over the whole run.
    pub bits_per_second: f64,
    /// Each interval: (start, end) in Unix seconds, and its rate.
    pub intervals: Vec<(f64, f64, f64)>,
}

impl Run {
    /// Waits for the run (bounded: its length and 20 s more) and reads its results.
    pub fn finish(self) -> Measured {
        let limit = Duration::from_secs(self.seconds as u64 + 20);
        let output = match self.output.recv_timeout(limit) {
            Ok(output) => output.expect("iperf3's output"),
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("iperf3 did not end within {limit:?}");
            }
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}): {text}"));
        assert!(
            output.status.success() && json.get("error").is_none(),
            "iperf3 failed: {}",
            json.get("error").unwrap_or(&json)
        );
        parse(&json)
    }
}

fn parse(json: &serde_json::Value) -> Measured {
    let started = json["start"]["timestamp"]["timesecs"]
        .as_f64()
        .expect("iperf3 start timestamp");
    let intervals = json["intervals"]
        .as_array()
        .expect("iperf3 intervals")
        .iter()
        .map(|interval| {
            let sum = &interval["sum"];
            (
                started + sum["start"].as_f64().unwrap_or(0.0),
                started + sum["end"].as_f64().unwrap_or(0.0),
                sum["bits_per_second"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    Measured {
        bits_per_second: json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("iperf3 received rate"),
        intervals,
    }
}
