//! The policy: what the council's written policy says, as a file the daemon enforces.
//!
//! - [`file`]: the TOML as written;
//! - [`source`]: errors that name file, line and field;
//! - [`classes`]: categories, applications, domains, ports, protocols → datapath tables;
//! - [`lists`]: UT1/Shallalist domain list directories.
//!
//! A policy that fails to load changes nothing: the caller keeps the policy in force.

pub mod allowances;
pub mod bank_holidays;
pub mod check;
pub mod classes;
pub mod decide;
pub mod durations;
pub mod entries;
pub mod exceptions;
pub mod file;
pub mod groups;
pub mod ids;
pub mod lists;
pub mod moment;
pub mod retention;
pub mod rules;
pub mod schedule;
pub mod settings;
pub mod show;
pub mod source;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use classifier_common::config::{Config, quic_mode};
use serde::Serialize;

pub use self::{
    classes::ClassTables,
    exceptions::Exception,
    groups::Groups,
    ids::ClassIds,
    rules::{Action, Rule},
    source::{FieldPath, PolicyError},
};
use self::{file::PolicyFile, source::Source};

/// The default council policy, shipped in the binary (and as a file to copy and edit).
pub const DEFAULT_POLICY: &str = include_str!("../../policy/council-default.toml");
/// How the default policy is named in messages.
pub const DEFAULT_POLICY_NAME: &str = "(built-in council-default.toml)";

/// A validated policy, ready to install.
#[derive(Debug)]
pub struct Policy {
    /// Where it came from, for messages.
    pub origin: String,
    pub site_name: String,
    pub timezone: jiff::tz::TimeZone,
    pub classes: ClassTables,
    pub groups: Groups,
    pub rules: Vec<Rule>,
    pub exceptions: Vec<Exception>,
    /// Which period is in force when.
    pub schedule: schedule::Schedule,
    /// Every period the rules may name (the schedule's).
    pub periods: Vec<String>,
    /// The datapath settings the policy implies.
    pub datapath: DatapathSettings,
    /// How shape verdicts are enforced.
    pub shaping: ShapingMethod,
    /// When flows end and how long their records keep the client.
    pub records: RecordsPolicy,
    /// The bandwidth-degradation log's intervals, link and alerts.
    pub degradation: settings::DegradationPolicy,
}

/// What the policy sets in the datapath besides its tables.
#[derive(Debug, Clone, Default)]
pub struct DatapathSettings {
    /// The `CONFIG` entry.
    pub config: Config,
    /// `[datapath] lan_prefixes`: flows only for these sources (empty: any).
    pub lan_prefixes: Vec<ipnet::IpNet>,
}

/// `[records]`, validated.
#[derive(Debug, Clone, Default)]
pub struct RecordsPolicy {
    pub end_rules: settings::EndRules,
    pub retention: retention::Retention,
    /// Why records are kept longer than the councils' 14 months, when they are.
    pub retention_override_reason: Option<String>,
    /// `[export]`: the live IPFIX export.
    pub ipfix: IpfixPolicy,
}

/// `[export]`, validated: where and how flows are exported as IPFIX while the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpfixPolicy {
    /// `ipfix_collector`: none, no live export.
    pub collector: Option<std::net::SocketAddr>,
    /// `ipfix_enterprise_number`: none, the enterprise-specific fields are not exported.
    pub enterprise: Option<u32>,
    /// `ipfix_active_timeout`: a lasting flow is reported this often.
    pub active_timeout: std::time::Duration,
}

impl IpfixPolicy {
    /// 30 minutes: what routers ship with (Cisco IOS, Juniper, FortiGate) and what most
    /// collectors' dashboards expect; docs/ipfix.md compares nfdump's and softflowd's.
    pub const DEFAULT_ACTIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);
}

impl Default for IpfixPolicy {
    fn default() -> Self {
        Self {
            collector: None,
            enterprise: None,
            active_timeout: Self::DEFAULT_ACTIVE_TIMEOUT,
        }
    }
}

/// How shape verdicts are enforced (`[shaping] method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShapingMethod {
    /// HTB classes on the interfaces' egress, made by the daemon over netlink.
    #[default]
    Htb,
    /// A token bucket in the datapath: what exceeds the rate is dropped.
    Policer,
}

impl std::fmt::Display for ShapingMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShapingMethod::Htb => "htb",
            ShapingMethod::Policer => "policer",
        })
    }
}

/// Where the exceptions the CLI adds and expires are kept, unless told otherwise.
pub const DEFAULT_EXCEPTIONS_FILE: &str = "/etc/classifier/exceptions.toml";
/// The site's policy, which commands that read a policy without a daemon use when it
/// exists. A fixed path, the one the systemd unit gives the daemon; no variable moves it
/// (`--policy FILE` reads another).
pub const SITE_POLICY_FILE: &str = "/etc/classifier/policy.toml";

/// Which policy a command reads when it does not ask a daemon: the file named with
/// `--policy`, else the site's file ([`SITE_POLICY_FILE`]) when it exists, else the built-in
/// council policy. Commands say which they used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyChoice {
    /// Named with `--policy`.
    Named(PathBuf),
    /// The site's policy file, [`SITE_POLICY_FILE`], which exists.
    Site(PathBuf),
    /// The built-in council policy (the site has no policy file).
    BuiltIn,
}

impl PolicyChoice {
    pub fn resolve(named: Option<&Path>) -> Self {
        match named {
            Some(path) => Self::Named(path.to_owned()),
            None => {
                let site = Path::new(SITE_POLICY_FILE);
                if site.exists() {
                    Self::Site(site.to_owned())
                } else {
                    Self::BuiltIn
                }
            }
        }
    }

    /// The file, when there is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Named(path) | Self::Site(path) => Some(path),
            Self::BuiltIn => None,
        }
    }

    /// How messages name it: `the site's policy /etc/classifier/policy.toml`.
    pub fn describe(&self) -> String {
        match self {
            Self::Named(path) => format!("the policy {}", path.display()),
            Self::Site(path) => format!("the site's policy {}", path.display()),
            Self::BuiltIn => {
                format!("the built-in council policy (there is no {SITE_POLICY_FILE})")
            }
        }
    }
}

/// The exceptions file a command reads: the one named with `--exceptions`, which must
/// exist (a mistyped path is an error, not "no exceptions"), else
/// [`DEFAULT_EXCEPTIONS_FILE`], read when it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionsChoice {
    pub path: PathBuf,
    /// Named by the user.
    pub named: bool,
}

impl ExceptionsChoice {
    pub fn resolve(named: Option<&Path>) -> Self {
        match named {
            Some(path) => Self {
                path: path.to_owned(),
                named: true,
            },
            None => Self {
                path: PathBuf::from(DEFAULT_EXCEPTIONS_FILE),
                named: false,
            },
        }
    }
}

/// Where a policy comes from: a policy file (or the built-in one) and the exceptions file
/// `classifier exceptions add|expire` maintains.
#[derive(Debug, Clone, Default)]
pub struct PolicySources {
    pub policy: Option<PathBuf>,
    /// Read when it exists; when the user named it, it must exist.
    pub exceptions: Option<ExceptionsChoice>,
}

impl PolicySources {
    /// The policy `choice` and the exceptions file `exceptions`.
    pub fn of(choice: &PolicyChoice, exceptions: ExceptionsChoice) -> Self {
        Self {
            policy: choice.file().map(Path::to_owned),
            exceptions: Some(exceptions),
        }
    }

    /// Reads and validates both files: an error names file, line and field.
    pub fn load(&self) -> Result<Policy, PolicyError> {
        self.load_with_ids(&ClassIds::default())
    }

    /// [`PolicySources::load`], keeping the ids `ids` gives category and application names
    /// (those of the flows in the datapath).
    pub fn load_with_ids(&self, ids: &ClassIds) -> Result<Policy, PolicyError> {
        let mut policy = match &self.policy {
            Some(path) => Policy::load_with_ids(path, ids)?,
            None => Policy::parse_with_ids(
                DEFAULT_POLICY,
                Path::new(DEFAULT_POLICY_NAME),
                Path::new("."),
                ids,
            )?,
        };
        if let Some(exceptions) = &self.exceptions {
            if exceptions.path.exists() {
                policy.add_exceptions_from(&exceptions.path)?;
            } else if exceptions.named {
                return Err(PolicyError {
                    file: exceptions.path.display().to_string(),
                    line: 0,
                    column: 0,
                    field: "(file)".into(),
                    message: "the exceptions file named with --exceptions does not exist \
                              (`classifier exceptions add` makes it)"
                        .into(),
                });
            }
        }
        Ok(policy)
    }
}

impl Policy {
    /// Adds the exceptions of an exceptions file, validated against this policy's
    /// categories and groups.
    pub fn add_exceptions_from(&mut self, path: &Path) -> Result<(), PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            field: "(file)".into(),
            message: format!("cannot read the exceptions file: {e}"),
        })?;
        self.add_exceptions_text(&text, path)
    }

    /// [`Policy::add_exceptions_from`] for the text of an exceptions file, named `path` in
    /// errors (a change not yet written is named as the file it is meant for).
    pub fn add_exceptions_text(&mut self, text: &str, path: &Path) -> Result<(), PolicyError> {
        let source = Source::new(path, text);
        let file: exceptions::ExceptionsFile =
            toml::from_str(text).map_err(|e| source.toml_error(&e))?;
        let category = |name: &str| self.classes.category_id(name);
        let group = |name: &str| self.groups.id(name);
        let mut added = exceptions::compile(
            &file.exceptions,
            &exceptions::Names {
                category: &category,
                group: &group,
            },
            &self.timezone,
            &source,
        )?;
        for exception in &mut added {
            exception.origin = format!("{}: {}", path.display(), exception.origin);
        }
        self.exceptions.extend(added);
        Ok(())
    }

    /// Reads and validates the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Self::load_with_ids(path, &ClassIds::default())
    }

    /// [`Policy::load`], keeping the ids `ids` gives category and application names.
    pub fn load_with_ids(path: &Path, ids: &ClassIds) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            field: "(file)".into(),
            message: format!("cannot read the policy: {e}"),
        })?;
        let base_dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        Self::parse_with_ids(&text, path, &base_dir, ids)
    }

    /// The built-in default council policy.
    pub fn default_council() -> Self {
        Self::parse(
            DEFAULT_POLICY,
            Path::new(DEFAULT_POLICY_NAME),
            Path::new("."),
        )
        .expect("the built-in policy is valid (tested)")
    }

    /// Validates policy text; `origin` names it in errors, `base_dir` anchors list paths.
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Self, PolicyError> {
        Self::parse_with_ids(text, origin, base_dir, &ClassIds::default())
    }

    /// [`Policy::parse`], keeping the ids `ids` gives category and application names.
    pub fn parse_with_ids(
        text: &str,
        origin: &Path,
        base_dir: &Path,
        ids: &ClassIds,
    ) -> Result<Self, PolicyError> {
        let source = Source::new(origin, text);
        let file: PolicyFile = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
        Self::compile(&file, &source, base_dir, ids)
    }

    /// Validates a parsed policy file; `source` locates errors.
    fn compile(
        file: &PolicyFile,
        source: &Source<'_>,
        base_dir: &Path,
        ids: &ClassIds,
    ) -> Result<Self, PolicyError> {
        let origin = source.file();
        let timezone = jiff::tz::TimeZone::get(&file.site.timezone).map_err(|e| {
            source.error_at(
                &FieldPath::root().key("site").key("timezone"),
                format!("unknown time zone `{}`: {e}", file.site.timezone),
            )
        })?;
        let classes = classes::compile(file, source, base_dir, ids)?;
        let groups = Groups::compile(&file.groups, source)?;
        let schedule = schedule::compile(
            &file.schedule.clone().unwrap_or_default(),
            &timezone,
            base_dir,
        )
        .map_err(|(path, message)| source.error_at(&path, message))?;
        let periods = schedule.periods();
        let category = |name: &str| classes.category_id(name);
        let group = |name: &str| groups.id(name);
        let rules = rules::compile(
            &file.rules,
            &rules::Names {
                category: &category,
                group: &group,
                periods: &periods,
            },
            source,
        )?;
        let exceptions = exceptions::compile(
            &file.exceptions,
            &exceptions::Names {
                category: &category,
                group: &group,
            },
            &timezone,
            source,
        )?;
        let datapath = datapath_config(file, source)?;
        let shaping = shaping_method(file, source)?;
        let records = records_policy(file, source)?;
        let degradation = degradation_policy(file, &classes, source)?;
        rules::check_shape_classes(&rules, source)?;
        Ok(Self {
            origin: origin.to_owned(),
            site_name: file.site.name.clone(),
            timezone,
            classes,
            groups,
            rules,
            exceptions,
            schedule,
            periods,
            datapath,
            shaping,
            records,
            degradation,
        })
    }
}

fn degradation_policy(
    file: &PolicyFile,
    classes: &ClassTables,
    source: &Source<'_>,
) -> Result<settings::DegradationPolicy, PolicyError> {
    let section = &file.degradation;
    let at = |key: &str| FieldPath::root().key("degradation").key(key);
    let mut intervals = Vec::new();
    for text in &section.intervals {
        let interval = durations::parse_duration(text)
            .map_err(|message| source.error_at(&at("intervals"), message))?;
        if interval < std::time::Duration::from_secs(2) {
            return Err(source.error_at(
                &at("intervals"),
                format!("`{text}`: at least 2s (the daemon reads the flow table every 2 s)"),
            ));
        }
        intervals.push(interval);
    }
    intervals.sort();
    let rate = |key: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| {
                rules::parse_rate(t).map_err(|e| source.error_at(&at(key), format!("`{t}`: {e}")))
            })
            .transpose()
    };
    let watched_categories = match &section.watched_categories {
        Some(names) => names.clone(),
        None => settings::DegradationPolicy::default()
            .watched_categories
            .into_iter()
            .filter(|name| classes.category_id(name).is_some())
            .collect(),
    };
    for name in &watched_categories {
        if classes.category_id(name).is_none() {
            return Err(source.error_at(
                &at("watched_categories"),
                format!("no category `{name}` in [categories]"),
            ));
        }
    }
    if !(0.0..=1.0).contains(&section.alert_share) {
        return Err(source.error_at(
            &at("alert_share"),
            format!(
                "{}: a share between 0 and 1 (0.5 is half the link)",
                section.alert_share
            ),
        ));
    }
    Ok(settings::DegradationPolicy {
        intervals,
        link_download_bps: rate("link_download", &section.link_download)?,
        link_upload_bps: rate("link_upload", &section.link_upload)?,
        watched_categories,
        alert_share: section.alert_share,
    })
}

fn records_policy(file: &PolicyFile, source: &Source<'_>) -> Result<RecordsPolicy, PolicyError> {
    use retention::{AfterRetention, Retention};
    let section = &file.records;
    let at = |key: &str| FieldPath::root().key("records").key(key);
    let idle_timeout = durations::parse_duration(&section.idle_timeout)
        .map_err(|message| source.error_at(&at("idle_timeout"), message))?;
    let keep = retention::parse_period(&section.retention)
        .map_err(|message| source.error_at(&at("retention"), message))?;
    let override_reason = section.retention_override_reason.as_deref().map(str::trim);
    let beyond_limit = retention::longer_than_months(keep, retention::MAX_MONTHS);
    match (beyond_limit, override_reason) {
        (true, None | Some("")) => {
            return Err(source.error_at(
                &at("retention"),
                format!(
                    "`{}` is more than {} months: {}. To keep records longer, say why in \
                     `retention_override_reason` (the decision's reference and who took it)",
                    section.retention,
                    retention::MAX_MONTHS,
                    retention::LIMIT_REASON
                ),
            ));
        }
        (false, Some(_)) => {
            return Err(source.error_at(
                &at("retention_override_reason"),
                format!(
                    "retention `{}` is within {} months: there is nothing to override; \
                     remove the reason",
                    section.retention,
                    retention::MAX_MONTHS
                ),
            ));
        }
        _ => {}
    }
    // Past `retention` a report has no client in it, so no limit applies beyond that.
    let degradation_keep = retention::parse_period(&section.degradation_retention)
        .map_err(|message| source.error_at(&at("degradation_retention"), message))?;
    let after = match section.after_retention.as_str() {
        "delete" => AfterRetention::Delete,
        "anonymise" | "anonymize" => AfterRetention::Anonymise,
        other => {
            return Err(source.error_at(
                &at("after_retention"),
                format!("`{other}`: choose `delete` or `anonymise`"),
            ));
        }
    };
    Ok(RecordsPolicy {
        end_rules: settings::EndRules {
            idle_timeout,
            ..Default::default()
        },
        retention: Retention {
            keep,
            after,
            degradation_keep,
        },
        retention_override_reason: override_reason.map(str::to_owned),
        ipfix: ipfix_policy(file, source)?,
    })
}

fn ipfix_policy(file: &PolicyFile, source: &Source<'_>) -> Result<IpfixPolicy, PolicyError> {
    let section = &file.export;
    let at = |key: &str| FieldPath::root().key("export").key(key);
    let collector = section
        .ipfix_collector
        .as_deref()
        .map(|text| {
            text.parse().map_err(|e| {
                source.error_at(
                    &at("ipfix_collector"),
                    format!("`{text}`: {e} (an address and a port: `192.0.2.50:4739`, `[2001:db8::50]:4739`)"),
                )
            })
        })
        .transpose()?;
    if section.ipfix_enterprise_number == Some(0) {
        return Err(source.error_at(
            &at("ipfix_enterprise_number"),
            "0 is IANA's own number, not an enterprise's: give the site's Private \
             Enterprise Number, or leave the key out"
                .to_owned(),
        ));
    }
    let active_timeout = match &section.ipfix_active_timeout {
        None => IpfixPolicy::DEFAULT_ACTIVE_TIMEOUT,
        Some(text) => {
            let timeout = durations::parse_duration(text)
                .map_err(|message| source.error_at(&at("ipfix_active_timeout"), message))?;
            if timeout < std::time::Duration::from_secs(1) {
                return Err(source.error_at(
                    &at("ipfix_active_timeout"),
                    format!("`{text}`: at least 1s (flows are looked at every 2s)"),
                ));
            }
            timeout
        }
    };
    Ok(IpfixPolicy {
        collector,
        enterprise: section.ipfix_enterprise_number,
        active_timeout,
    })
}

fn shaping_method(file: &PolicyFile, source: &Source<'_>) -> Result<ShapingMethod, PolicyError> {
    match file.shaping.method.as_str() {
        "htb" => Ok(ShapingMethod::Htb),
        "policer" => Ok(ShapingMethod::Policer),
        other => Err(source.error_at(
            &FieldPath::root().key("shaping").key("method"),
            format!(
                "`{other}`: choose `htb` (queue in HTB classes) or `policer` (drop above the rate)"
            ),
        )),
    }
}

fn datapath_config(
    file: &PolicyFile,
    source: &Source<'_>,
) -> Result<DatapathSettings, PolicyError> {
    let quic_mode = match file.quic.mode.as_str() {
        "classify" => quic_mode::CLASSIFY,
        "protocol-only" => quic_mode::PROTOCOL_ONLY,
        other => {
            return Err(source.error_at(
                &FieldPath::root().key("quic").key("mode"),
                format!("`{other}`: choose `classify` or `protocol-only`"),
            ));
        }
    };
    let peer_ttl: Duration =
        durations::parse_duration(&file.bittorrent.peer_ttl).map_err(|message| {
            source.error_at(
                &FieldPath::root().key("bittorrent").key("peer_ttl"),
                message,
            )
        })?;
    let section = &file.datapath;
    let mut lan_prefixes = Vec::new();
    for (i, text) in section.lan_prefixes.iter().enumerate() {
        let net = groups::parse_prefix(text).map_err(|message| {
            source.error_at(
                &FieldPath::root()
                    .key("datapath")
                    .key("lan_prefixes")
                    .index(i),
                message,
            )
        })?;
        lan_prefixes.push(net);
    }
    let config = Config {
        quic_mode,
        quic_hold: file.quic.hold_until_classified as u8,
        peer_ttl_secs: peer_ttl.as_secs().min(u32::MAX as u64) as u32,
        flow_rate: section.new_flows_per_second,
        flow_burst: section.new_flows_burst,
        reassembly_rate: section.reassemblies_per_second,
        reassembly_burst: section.reassemblies_burst,
        quic_rate: section.quic_initials_per_second,
        quic_burst: section.quic_initials_burst,
        lan_filter: !lan_prefixes.is_empty() as u8,
        ..Config::default()
    };
    Ok(DatapathSettings {
        config,
        lan_prefixes,
    })
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
