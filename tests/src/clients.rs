//! Real clients in lab namespaces: curl downloads, UDP datagrams, whether a site is
//! blocked, and the facts of a client host (or of the gateway) the tests compare with.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use classifier_lab::{Host, Lab};

/// Downloads `len` bytes from `http://{name}/bytes/{len}` over the address family of
/// `server` (the name resolves to both families in the lab), from `local_port`; checks the
/// body size and the address curl used.
pub fn curl_download(client: &Host, name: &str, server: IpAddr, local_port: u16, len: u64) {
    let family = if server.is_ipv4() { "--ipv4" } else { "--ipv6" };
    let url = format!("http://{name}/bytes/{len}");
    let output = Lab::command(client, "curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--output",
            "/dev/null",
        ])
        .args(["--local-port", &local_port.to_string(), family])
        .args(["--write-out", "%{size_download} %{remote_ip}"])
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{len} {server}"),
        "body size and address of {url} {family}"
    );
}

/// Sends `count` small datagrams from `from` (inside `host`) to `to`, 20 ms apart.
pub fn send_udp(host: &Host, from: SocketAddr, to: SocketAddr, count: usize) {
    classifier_user::netns::run_in(&host.netns, move || {
        let socket = std::net::UdpSocket::bind(from)?;
        for _ in 0..count {
            socket.send_to(b"lab datagram", to)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })
    .unwrap();
}

/// The MAC address of `host`'s lab interface.
pub fn interface_mac(host: &Host) -> String {
    let output = Lab::command(host, "cat")
        .arg(format!("/sys/class/net/{}/address", host.iface))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A download of `len` bytes of `http://{name}/bytes/{len}` from `local_port`, paced by the
/// server at `rate` bytes/s, running in the background; given up after `max_seconds`.
pub fn slow_download(
    client: &Host,
    name: &str,
    local_port: u16,
    len: u64,
    rate: u64,
    max_seconds: u32,
) -> Child {
    Lab::command(client, "curl")
        .args(["--silent", "--ipv4", "--output", "/dev/null"])
        .args(["--max-time", &max_seconds.to_string()])
        .args(["--local-port", &local_port.to_string()])
        .args(["--write-out", "%{size_download}"])
        .arg(format!("http://{name}/bytes/{len}?rate={rate}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl starts")
}

/// Waits (bounded) for curl; returns whether it succeeded and the bytes it received.
pub fn finish_download(mut curl: Child) -> (bool, u64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while curl.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = curl.kill();
            let _ = curl.wait();
            panic!("curl did not end within 40 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = curl.wait_with_output().unwrap();
    let size = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (output.status.success(), size)
}

/// Whether a new HTTPS connection to `name` fails within a few seconds (blocked) rather
/// than being answered.
pub fn tls_blocked(client: &Host, name: &str) -> bool {
    let output = Lab::command(client, "curl")
        .args(["--silent", "--ipv4", "--insecure", "--max-time", "3"])
        .args(["--output", "/dev/null"])
        .arg(format!("https://{name}/"))
        .output()
        .expect("curl runs");
    !output.status.success()
}

/// Whether the gateway's LAN interface has an XDP program.
pub fn gateway_has_xdp(lab: &Lab) -> bool {
    let output = Command::new("ip")
        .args(["-n", &lab.gateway.netns, "link", "show", lab.gateway.iface])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&output.stdout).contains("xdp")
}
