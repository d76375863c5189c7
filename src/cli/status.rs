//! `status` and `render`: reading subscriptions (or rendering them) and
//! printing them as kubectl prints objects.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use kube::{Api, Client, Resource as _, ResourceExt, api::ListParams};
use serde_json::{Value, json};

use super::{CliError, Connection, Output};
use crate::{
    api::{CapacityCalendar, ModuleProfile, ModuleState, SubscriptionPlan, TenantSubscription},
    capacity::Catalogue,
    preview,
};

/// What a command prints: its result on stdout, and a note for people on
/// stderr (kubectl's "No resources found").
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

/// `status [NAME]`: one subscription, or every one in a namespace (or all).
#[derive(Debug, Clone, Default)]
pub struct StatusQuery {
    pub name: Option<String>,
    /// Unset: the kubeconfig context's namespace.
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub output: Option<Output>,
}

pub async fn status(connection: &Connection, query: &StatusQuery) -> Result<Printed, CliError> {
    if query.all_namespaces && query.name.is_some() {
        return Err(CliError::NameAcrossNamespaces);
    }
    let (client, default_namespace) = connection.connect().await?;
    let namespace = query.namespace.clone().unwrap_or(default_namespace);
    match &query.name {
        Some(name) => {
            let api: Api<TenantSubscription> = Api::namespaced(client, &namespace);
            let sub = api.get(name).await?;
            Ok(Printed {
                stdout: show_one(&sub, query.output),
                stderr: String::new(),
            })
        }
        None => {
            let api: Api<TenantSubscription> = if query.all_namespaces {
                Api::all(client)
            } else {
                Api::namespaced(client, &namespace)
            };
            let mut subs = api.list(&ListParams::default()).await?.items;
            subs.sort_by_key(|s| (s.namespace(), s.name_any()));
            let scope = (!query.all_namespaces).then_some(namespace.as_str());
            Ok(show_list(&subs, scope, query.output, Timestamp::now()))
        }
    }
}

/// One subscription: the per-module table, or the object itself.
pub fn show_one(sub: &TenantSubscription, output: Option<Output>) -> String {
    match output {
        None => preview::status_table(sub, false),
        Some(Output::Wide) => preview::status_table(sub, true),
        Some(Output::Json) => json_text(&as_object(sub)),
        Some(Output::Yaml) => yaml_text(&as_object(sub)),
    }
}

/// Subscriptions of one namespace (`scope`) or of all (`None`, with a
/// NAMESPACE column): a table like `kubectl get`'s, or a `List`.
pub fn show_list(
    subs: &[TenantSubscription],
    scope: Option<&str>,
    output: Option<Output>,
    now: Timestamp,
) -> Printed {
    let list = || {
        json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": subs.iter().map(as_object).collect::<Vec<_>>(),
            "metadata": {"resourceVersion": ""},
        })
    };
    match output {
        Some(Output::Json) => Printed {
            stdout: json_text(&list()),
            stderr: String::new(),
        },
        Some(Output::Yaml) => Printed {
            stdout: yaml_text(&list()),
            stderr: String::new(),
        },
        None | Some(Output::Wide) if subs.is_empty() => Printed {
            stdout: String::new(),
            stderr: match scope {
                Some(ns) => format!("No resources found in {ns} namespace.\n"),
                None => "No resources found\n".to_string(),
            },
        },
        None | Some(Output::Wide) => Printed {
            stdout: list_table(subs, scope.is_none(), output == Some(Output::Wide), now),
            stderr: String::new(),
        },
    }
}

/// The table of `kubectl capacity status` without a name. MODULES counts
/// the modules serving (Active) of those the spec enables; `wide` adds the
/// next window transition, whether the subscription is paused, the session
/// ceiling in force and ready/current replicas, summed over its modules.
pub fn list_table(
    subs: &[TenantSubscription],
    all_namespaces: bool,
    wide: bool,
    now: Timestamp,
) -> String {
    let none = || "<none>".to_string();
    let mut header = vec![
        "NAME", "TENANT", "PLAN", "READY", "REASON", "MODULES", "WINDOWS",
    ];
    if wide {
        header.extend(["NEXT", "PAUSED", "SESSIONS", "REPLICAS"]);
    }
    header.push("AGE");
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for sub in subs {
        let st = sub.status.clone().unwrap_or_default();
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
        let serving = st
            .modules
            .iter()
            .filter(|m| m.state == Some(ModuleState::Active))
            .count();
        let enabled = sub.spec.modules.iter().filter(|m| m.enabled).count();
        let mut row = vec![
            sub.name_any(),
            sub.spec.tenant_id.clone(),
            sub.spec.plan.clone().unwrap_or_else(none),
            ready.map(|c| c.status.clone()).unwrap_or_else(none),
            ready.map(|c| c.reason.clone()).unwrap_or_else(none),
            format!("{serving}/{enabled}"),
            if st.active_windows.is_empty() {
                none()
            } else {
                st.active_windows.join(",")
            },
        ];
        if wide {
            let sum = |f: fn(&crate::api::ModuleStatus) -> Option<i64>| -> i64 {
                st.modules.iter().filter_map(f).sum()
            };
            row.extend([
                st.next_transition.clone().unwrap_or_else(none),
                sub.spec.paused.to_string(),
                sum(|m| m.concurrency).to_string(),
                format!(
                    "{}/{}",
                    sum(|m| m.ready_replicas.map(i64::from)),
                    sum(|m| m.replicas.map(i64::from))
                ),
            ]);
        }
        row.push(
            sub.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| human_age(now.duration_since(t.0)))
                .unwrap_or_else(none),
        );
        if all_namespaces {
            row.insert(0, sub.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    // kubectl's tables: columns three spaces apart.
    preview::align(&rows, 3)
}

/// An age as kubectl writes it: `45s`, `5m30s`, `3h10m`, `2d4h`, `400d`, `3y20d`.
pub fn human_age(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// `render -f FILE`: every object the operator would apply for the
/// subscriptions in `file`, with the catalogue from the YAML under
/// `profiles`, or, without it, the cluster's.
pub async fn render(
    connection: &Connection,
    file: &Path,
    profiles: Option<&Path>,
    namespace: Option<&str>,
    at: Option<Timestamp>,
    output: Option<Output>,
) -> Result<String, CliError> {
    if output == Some(Output::Wide) {
        return Err(CliError::RenderWide);
    }
    let failed = |e: anyhow::Error| CliError::Render(format!("{e:#}"));
    let mut subs = preview::load_subscriptions(file).map_err(failed)?;
    for sub in &mut subs {
        if sub.metadata.namespace.is_none() {
            sub.metadata.namespace = namespace.map(String::from);
        }
    }
    let catalogue = match profiles {
        Some(path) => preview::load_catalogue(path).map_err(failed)?,
        None => {
            let (client, _) = connection.connect().await?;
            cluster_catalogue(client).await?
        }
    };
    let at = at.unwrap_or_else(Timestamp::now);
    let mut yaml = String::new();
    let mut objects = Vec::new();
    for sub in &subs {
        let rendered = preview::render_objects(sub, &catalogue, at).map_err(failed)?;
        yaml.push_str(&preview::rendered_yaml(&rendered).map_err(failed)?);
        objects.extend(rendered.objects);
    }
    Ok(match output {
        Some(Output::Json) => json_text(&json!({
            "apiVersion": "v1", "kind": "List", "items": objects,
            "metadata": {"resourceVersion": ""},
        })),
        _ => yaml,
    })
}

/// The catalogue as the cluster holds it: every ModuleProfile,
/// SubscriptionPlan and CapacityCalendar.
async fn cluster_catalogue(client: Client) -> Result<Catalogue, kube::Error> {
    let lp = ListParams::default();
    let mut catalogue = Catalogue::default();
    for p in Api::<ModuleProfile>::all(client.clone()).list(&lp).await? {
        catalogue.profiles.insert(p.name_any(), p.spec);
    }
    for p in Api::<SubscriptionPlan>::all(client.clone())
        .list(&lp)
        .await?
    {
        catalogue.plans.insert(p.name_any(), p.spec);
    }
    for c in Api::<CapacityCalendar>::all(client).list(&lp).await? {
        catalogue.calendars.insert(c.name_any(), c.spec);
    }
    Ok(catalogue)
}

/// A subscription as `kubectl get -o json` shows it (no managed fields).
fn as_object(sub: &TenantSubscription) -> Value {
    let mut v = serde_json::to_value(sub).expect("a subscription serialises");
    v["apiVersion"] = TenantSubscription::api_version(&()).into();
    v["kind"] = TenantSubscription::kind(&()).into();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    v
}

fn json_text(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON serialises") + "\n"
}

fn yaml_text(v: &Value) -> String {
    serde_saphyr::to_string(v).expect("JSON serialises as YAML")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sub(namespace: &str, name: &str, status: Value) -> TenantSubscription {
        preview::parse(json!({
            "apiVersion": "capacity.tenancy.dev/v1alpha1", "kind": "TenantSubscription",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": "2026-07-15T10:00:00Z",
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"tenantId": "acme", "plan": "pro", "modules": [
                {"name": "im", "concurrency": 100},
                {"name": "video-call", "concurrency": 40},
                {"name": "voice", "concurrency": 10, "enabled": false}]},
            "status": status,
        }))
        .unwrap()
    }

    fn converged() -> Value {
        json!({
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                            "lastTransitionTime": "2026-07-15T10:00:05Z"}],
            "activeWindows": ["evenings/evening"],
            "nextTransition": "2026-07-15T22:00:00+02:00",
            "modules": [
                {"name": "im", "state": "Active", "minReplicas": 1, "maxReplicas": 3, "replicas": 2,
                 "readyReplicas": 2, "concurrency": 100, "regions": ["eu-west-1"],
                 "readyByZone": {"eu-west-1a": 1, "eu-west-1b": 1}},
                {"name": "video-call", "state": "Draining", "minReplicas": 1, "maxReplicas": 1,
                 "replicas": 1, "readyReplicas": 0, "concurrency": 40,
                 "drainDeadline": "2026-07-15T10:05:00Z"},
            ],
        })
    }

    const NOW: &str = "2026-07-15T12:30:00Z";

    fn cells(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn subscriptions_of_a_namespace_read_as_kubectl_get() {
        let now: Timestamp = NOW.parse().unwrap();
        let subs = [sub("t", "acme", converged()), sub("t", "new", json!({}))];
        let out = show_list(&subs, Some("t"), None, now);
        assert_eq!(out.stderr, "");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            cells(lines[0]),
            [
                "NAME", "TENANT", "PLAN", "READY", "REASON", "MODULES", "WINDOWS", "AGE"
            ]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "acme",
                "acme",
                "pro",
                "True",
                "Available",
                "1/2",
                "evenings/evening",
                "150m"
            ]
        );
        // Not reconciled yet: nothing is claimed.
        assert_eq!(
            cells(lines[2]),
            [
                "new", "acme", "pro", "<none>", "<none>", "0/2", "<none>", "150m"
            ]
        );
        // Columns line up, three spaces apart at the widest cell.
        let at = lines[0].find("TENANT").unwrap();
        assert!(
            lines
                .iter()
                .all(|l| l[at..].starts_with(|c: char| c != ' '))
        );
        assert_eq!(&lines[1][at - 3..at], "   ");
    }

    #[test]
    fn wide_adds_the_next_transition_pause_sessions_and_replicas_and_all_namespaces_adds_namespace()
    {
        let now: Timestamp = NOW.parse().unwrap();
        let out = show_list(
            &[sub("t", "acme", converged())],
            None,
            Some(Output::Wide),
            now,
        );
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            cells(lines[0]),
            [
                "NAMESPACE",
                "NAME",
                "TENANT",
                "PLAN",
                "READY",
                "REASON",
                "MODULES",
                "WINDOWS",
                "NEXT",
                "PAUSED",
                "SESSIONS",
                "REPLICAS",
                "AGE"
            ]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "t",
                "acme",
                "acme",
                "pro",
                "True",
                "Available",
                "1/2",
                "evenings/evening",
                "2026-07-15T22:00:00+02:00",
                "false",
                "140",
                "2/3",
                "150m"
            ]
        );
    }

    #[test]
    fn an_empty_namespace_says_so_on_stderr_as_kubectl_does() {
        let now: Timestamp = NOW.parse().unwrap();
        let out = show_list(&[], Some("team-a"), None, now);
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("", "No resources found in team-a namespace.\n")
        );
        assert_eq!(
            show_list(&[], None, Some(Output::Wide), now).stderr,
            "No resources found\n"
        );
        // Machine-readable output is an empty List, not a sentence.
        let list: Value =
            serde_json::from_str(&show_list(&[], Some("t"), Some(Output::Json), now).stdout)
                .unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"], json!([]));
    }

    #[test]
    fn json_and_yaml_are_the_object_without_managed_fields() {
        let s = sub("t", "acme", converged());
        for text in [
            show_one(&s, Some(Output::Json)),
            show_one(&s, Some(Output::Yaml)),
        ] {
            let v: Value = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(v["apiVersion"], "capacity.tenancy.dev/v1alpha1");
            assert_eq!(v["kind"], "TenantSubscription");
            assert_eq!(v["metadata"]["name"], "acme");
            assert!(v["metadata"].get("managedFields").is_none(), "{text}");
            assert_eq!(v["status"]["modules"][0]["maxReplicas"], 3);
            assert_eq!(v["status"]["conditions"][0]["reason"], "Available");
        }
    }

    #[test]
    fn the_wide_status_table_adds_regions_zones_and_drain_deadlines() {
        let s = sub("t", "acme", converged());
        let narrow = show_one(&s, None);
        let wide = show_one(&s, Some(Output::Wide));
        let header = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("MODULE"))
                .map(|l| cells(l).join(" "))
                .unwrap()
        };
        assert_eq!(
            header(&narrow),
            "MODULE STATE TIER FLOOR CEILING DESIRED REPLICAS READY SESSIONS NOTE"
        );
        assert_eq!(
            header(&wide),
            "MODULE STATE TIER FLOOR CEILING DESIRED REPLICAS READY SESSIONS REGIONS ZONES DEADLINE NOTE"
        );
        let im = wide.lines().find(|l| l.starts_with("im ")).unwrap();
        assert_eq!(
            cells(im),
            [
                "im",
                "Active",
                "-",
                "1",
                "3",
                "-",
                "2",
                "2",
                "100",
                "eu-west-1",
                "eu-west-1a=1,eu-west-1b=1",
                "-"
            ]
        );
        let video = wide.lines().find(|l| l.starts_with("video-call ")).unwrap();
        assert!(video.contains("2026-07-15T10:05:00Z"), "{video}");
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let s = SignedDuration::from_secs;
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 600, "3h10m"),
            (30 * 3600, "30h"),
            (52 * 3600, "2d4h"),
            (400 * 86400, "400d"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_age(s(secs)), want, "{secs}s");
        }
    }
}
