//! docs/grafana-dashboard.json, read the way Grafana sends it to Prometheus: every panel's
//! query must choose the gateways of the `instance` variable (several gateways are never
//! summed together by accident), use Grafana's `$__rate_interval` for every range (no
//! hard-coded window), take the degradation interval from its variable, and name only
//! metric families the daemon exports.

use std::collections::BTreeSet;

use serde_json::Value;

/// The dashboard shipped in docs/.
pub const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/grafana-dashboard.json"
);

const INSTANCE_FILTER: &str = "instance=~\"$instance\"";

/// What is wrong with `dashboard` (JSON text) against `exposition` (a `/metrics` text): one
/// line per problem, none when it is right.
pub fn problems(dashboard: &str, exposition: &str) -> Vec<String> {
    let dashboard: Value = match serde_json::from_str(dashboard) {
        Ok(value) => value,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    let exported = exported_families(exposition);
    let mut problems = Vec::new();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for needed in ["instance", "interval"] {
        if !variables.contains(&needed) {
            problems.push(format!("no `{needed}` variable (has {variables:?})"));
        }
    }
    let queries = panel_queries(&dashboard);
    if queries.is_empty() {
        problems.push("no panel queries".to_owned());
    }
    for (panel, expr) in &queries {
        for (name, labels) in selectors(expr) {
            if !exported.contains(&name) {
                problems.push(format!(
                    "{panel}: `{name}` is not a metric the daemon exports"
                ));
            }
            if !labels.contains(INSTANCE_FILTER) {
                problems.push(format!("{panel}: `{name}` without {INSTANCE_FILTER}"));
            }
            if labels.contains("interval=\"") && !labels.contains("interval=\"$interval\"") {
                problems.push(format!(
                    "{panel}: `{name}` names a degradation interval instead of $interval"
                ));
            }
        }
        for range in ranges(expr) {
            if range != "$__rate_interval" {
                problems.push(format!(
                    "{panel}: range [{range}] instead of [$__rate_interval]"
                ));
            }
        }
    }
    problems
}

/// (panel title, expression) of every panel target.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((title.to_owned(), expr.to_owned()));
            }
        }
    }
    queries
}

/// The families of `# TYPE` lines.
fn exported_families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Each `classifier_*` metric in `expr` with its label matchers (empty without braces).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("classifier_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let after = &tail[end..];
        let labels = if after.starts_with('{') {
            after[..after.find('}').map_or(after.len(), |i| i + 1)].to_owned()
        } else {
            String::new()
        };
        found.push((name.to_owned(), labels));
        rest = &tail[end..];
    }
    found
}

/// What each `[...]` range in `expr` says.
fn ranges(expr: &str) -> Vec<&str> {
    expr.split('[')
        .skip(1)
        .filter_map(|part| part.split_once(']').map(|(range, _)| range))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP classifier_flows x\n# TYPE classifier_flows gauge\n\
        classifier_flows 1\n# TYPE classifier_traffic_bytes_total counter\n";

    fn dashboard(expr: &str, variables: &[&str]) -> String {
        serde_json::json!({
            "templating": {"list": variables.iter().map(|v| serde_json::json!({"name": v})).collect::<Vec<_>>()},
            "panels": [{"title": "p", "targets": [{"expr": expr}]}],
        })
        .to_string()
    }

    #[test]
    fn a_right_query_passes() {
        let expr = "sum by (instance) (rate(classifier_traffic_bytes_total{instance=~\"$instance\",direction=\"upload\"}[$__rate_interval])) * 8";
        assert_eq!(
            problems(&dashboard(expr, &["instance", "interval"]), EXPOSITION),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_fault_is_found() {
        let cases = [
            ("classifier_flows", "without instance"),
            ("classifier_gone{instance=~\"$instance\"}", "not a metric"),
            (
                "rate(classifier_traffic_bytes_total{instance=~\"$instance\"}[5m])",
                "range [5m]",
            ),
            (
                "classifier_flows{instance=~\"$instance\",interval=\"10s\"}",
                "instead of $interval",
            ),
        ];
        for (expr, expected) in cases {
            let found = problems(&dashboard(expr, &["instance", "interval"]), EXPOSITION);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expr}: {found:?}"
            );
        }
        let found = problems(
            &dashboard("classifier_flows{instance=~\"$instance\"}", &["datasource"]),
            EXPOSITION,
        );
        assert!(found.iter().any(|p| p.contains("no `instance` variable")));
    }
}
