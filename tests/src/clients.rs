//! Real clients in lab namespaces: curl downloads, UDP datagrams, and the facts of a
//! client host the tests compare records with.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use classifier_user::lab::{Host, Lab};

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
