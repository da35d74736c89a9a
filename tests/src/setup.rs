//! Lab set-ups several end-to-end tests share: a lab whose server answers HTTP for a
//! name, and the daemon started on it with a policy of the test's own.

use std::net::SocketAddr;

use classifier_lab::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    http::HttpServer,
    topology::{SERVICE_V4, SERVICE_V6},
};

/// A lab (one client) whose server answers HTTP on port 80, both families, for `name`.
/// Bind the pair as `let (lab, _http) = ...`: the server then stops before the lab goes.
pub fn http_lab(name: &str) -> (Lab, HttpServer) {
    http_lab_with(&LabSpec {
        server_names: vec![name.into()],
        ..LabSpec::default()
    })
}

/// [`http_lab`] for a lab of `spec`'s clients and server names.
pub fn http_lab_with(spec: &LabSpec) -> (Lab, HttpServer) {
    let lab = Lab::up(spec).expect("lab comes up");
    let http = HttpServer::start(
        &lab.server.netns,
        &[
            SocketAddr::new(SERVICE_V4.into(), 80),
            SocketAddr::new(SERVICE_V6.into(), 80),
        ],
    )
    .expect("the lab's HTTP server starts");
    (lab, http)
}

/// The daemon on `lab`'s gateway running `policy` (TOML text, written to the lab's data
/// directory), recording into `store` (the lab's SQLite file when `None`).
pub fn daemon_with_policy(lab: &Lab, policy: &str, store: Option<String>) -> DaemonProcess {
    std::fs::create_dir_all(lab.data_dir()).unwrap();
    let path = lab.data_dir().join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let options = DaemonOptions {
        extra_args: vec!["--policy".into(), path.display().to_string()],
        store,
        ..DaemonOptions::default()
    };
    DaemonProcess::start(&crate::classifier_bin(), lab, &options).expect("the daemon starts")
}

/// The council's default policy with its `working` period in force at every moment, so a
/// lab test's verdicts do not depend on when it runs.
pub fn council_policy_at_work() -> String {
    let default = classifier_user::policy::DEFAULT_POLICY;
    let periods = "[[schedule.period]]\nname = \"lunch\"\ndays = \"weekdays\"\nhours = \
                   \"12:00-13:00\"\n\n[[schedule.period]]\nname = \"working\"\ndays = \
                   \"weekdays\"\nhours = \"08:30-17:00\"\n";
    let policy = default.replacen(periods, "", 1).replacen(
        "default = \"outside\"",
        "default = \"working\"",
        1,
    );
    assert!(
        !policy.contains("[[schedule.period]]") && policy.contains("default = \"working\""),
        "the built-in policy's schedule changed: update council_policy_at_work"
    );
    policy
}
