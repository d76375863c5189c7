//! Offline preview (`render`): every object the operator would apply for a
//! subscription, from YAML files, without a cluster.

use std::path::Path;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use kube::ResourceExt;
use serde::de::DeserializeOwned;

use crate::{
    api::{CapacityCalendar, ModuleProfile, SubscriptionPlan, TenantSubscription},
    capacity,
    render::{self, Owner},
};

/// Read every ModuleProfile, SubscriptionPlan and CapacityCalendar from the
/// YAML files in a folder and its subfolders (or one file).
pub fn load_catalogue(path: &Path) -> anyhow::Result<capacity::Catalogue> {
    let mut files = Vec::new();
    collect_yaml(path, &mut files)?;
    files.sort();
    let mut out = capacity::Catalogue::default();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for doc in documents(&text).with_context(|| format!("parsing {}", f.display()))? {
            let kind = doc
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            let context = || format!("a {kind} in {}", f.display());
            match kind.as_str() {
                "ModuleProfile" => {
                    let p: ModuleProfile = parse(doc).with_context(context)?;
                    out.profiles.insert(p.name_any(), p.spec);
                }
                "SubscriptionPlan" => {
                    let p: SubscriptionPlan = parse(doc).with_context(context)?;
                    out.plans.insert(p.name_any(), p.spec);
                }
                "CapacityCalendar" => {
                    let c: CapacityCalendar = parse(doc).with_context(context)?;
                    out.calendars.insert(c.name_any(), c.spec);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn collect_yaml(path: &Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            let p = entry?.path();
            if p.is_dir() || matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            {
                collect_yaml(&p, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Every YAML document of a stream, as JSON values (empty documents skipped).
pub fn documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    // YAML 1.2 booleans only: `y` or `no` stay strings, as in a namespace named "no".
    let options = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, options)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// An object from its JSON form, as the operator reads it (the same
/// `Deserialize` as the controller's watches); a refusal names the field
/// at fault: `spec.modules[0].concurrency: invalid type: string "5",
/// expected i64`.
pub fn parse<K: DeserializeOwned>(doc: serde_json::Value) -> anyhow::Result<K> {
    use serde_json::Value;
    // serde reads a struct from a list too, field by field in order, and
    // would then name a position (`[0]: ... expected ObjectMeta`).
    let what = match &doc {
        Value::Object(_) => None,
        Value::Array(_) => Some("a list"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
        Value::Null => Some("empty"),
    };
    if let Some(what) = what {
        bail!("the object is {what}, not a mapping of fields");
    }
    serde_path_to_error::deserialize(doc).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Read the subscriptions in a YAML file.
pub fn load_subscriptions(path: &Path) -> anyhow::Result<Vec<TenantSubscription>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let subs: Vec<TenantSubscription> = documents(&text)?
        .into_iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("TenantSubscription"))
        .map(parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("a TenantSubscription in {}", path.display()))?;
    if subs.is_empty() {
        bail!("{} holds no TenantSubscription", path.display());
    }
    Ok(subs)
}

/// Every object the operator would apply for a subscription at `at`, and
/// a one-line summary of its windows.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `<name>: active windows [...], next transition ...`.
    pub summary: String,
    pub objects: Vec<serde_json::Value>,
}

/// What the operator would apply for `sub` at `at`, or every reason it
/// cannot be applied.
pub fn render_objects(
    sub: &TenantSubscription,
    catalogue: &capacity::Catalogue,
    at: Timestamp,
) -> anyhow::Result<Rendered> {
    let name = sub.name_any();
    let plan = capacity::plan(&name, &sub.spec, catalogue, at).map_err(|errors| {
        anyhow::anyhow!(
            "subscription {name:?} cannot be applied:\n  {}",
            errors
                .iter()
                .map(|e| format!("{} ({})", e, e.reason()))
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    })?;
    let owner = Owner {
        name: name.clone(),
        namespace: sub.namespace().unwrap_or_else(|| "default".into()),
        tenant_id: sub.spec.tenant_id.clone(),
        reference: sub.metadata.uid.as_ref().and_then(|_| {
            use kube::Resource;
            sub.controller_owner_ref(&())
        }),
    };
    let summary = format!(
        "{name}: active windows [{}], next transition {}",
        plan.active_windows.join(", "),
        plan.next_transition
            .map(|t| capacity::window::format_instant(t, &plan.time_zone))
            .unwrap_or_else(|| "none".into())
    );
    let objects = render::all_children(&owner, &plan)
        .iter()
        .map(|child| child.to_value())
        .collect();
    Ok(Rendered { summary, objects })
}

/// The multi-document YAML of a rendering, its summary as a comment first.
pub fn rendered_yaml(rendered: &Rendered) -> anyhow::Result<String> {
    let mut out = format!("# {}\n", rendered.summary);
    for object in &rendered.objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}

/// The multi-document YAML of every object the operator would apply at `at`.
pub fn render_yaml(
    sub: &TenantSubscription,
    catalogue: &capacity::Catalogue,
    at: Timestamp,
) -> anyhow::Result<String> {
    rendered_yaml(&render_objects(sub, catalogue, at)?)
}

/// A per-module table of a subscription's status, for people at a terminal;
/// `wide` adds each module's regions, ready pods by zone and drain deadline.
pub fn status_table(sub: &TenantSubscription, wide: bool) -> String {
    let st = sub.status.clone().unwrap_or_default();
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut header = vec![
        "MODULE", "STATE", "TIER", "FLOOR", "CEILING", "DESIRED", "REPLICAS", "READY", "SESSIONS",
    ];
    if wide {
        header.extend(["REGIONS", "ZONES", "DEADLINE"]);
    }
    header.push("NOTE");
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for m in &st.modules {
        let mut row = vec![
            m.name.clone(),
            m.state
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "-".into()),
            m.tier.clone().unwrap_or_else(|| "-".into()),
            opt(m.min_replicas.map(Into::into)),
            opt(m.max_replicas.map(Into::into)),
            opt(m.desired_replicas.map(Into::into)),
            opt(m.replicas.map(Into::into)),
            opt(m.ready_replicas.map(Into::into)),
            opt(m.concurrency),
        ];
        if wide {
            let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
            row.extend([
                or_dash(m.regions.join(",")),
                or_dash(
                    m.ready_by_zone
                        .iter()
                        .map(|(zone, n)| format!("{zone}={n}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                m.drain_deadline.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        row.push(m.message.clone().unwrap_or_default());
        rows.push(row);
    }
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
    let mut out = format!(
        "{}/{} (tenant {}){}\nReady: {} ({}) {}\nActive windows: {}\nNext transition: {}\n\n",
        sub.namespace().unwrap_or_default(),
        sub.name_any(),
        sub.spec.tenant_id,
        sub.spec
            .plan
            .as_ref()
            .map(|p| format!(", plan {p}"))
            .unwrap_or_default(),
        ready.map(|c| c.status.as_str()).unwrap_or("Unknown"),
        ready.map(|c| c.reason.as_str()).unwrap_or("-"),
        ready.map(|c| c.message.as_str()).unwrap_or(""),
        if st.active_windows.is_empty() {
            "none".to_string()
        } else {
            st.active_windows.join(", ")
        },
        st.next_transition.as_deref().unwrap_or("none"),
    );
    out.push_str(&align(&rows, 2));
    out
}

/// Rows as left-aligned columns `gap` spaces apart (each line trimmed).
pub fn align(rows: &[Vec<String>], gap: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join(&" ".repeat(gap)).trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_refusal_to_read_an_object_names_the_field_at_fault() {
        let e = parse::<TenantSubscription>(json!({
            "apiVersion": "capacity.tenancy.dev/v1alpha1", "kind": "TenantSubscription",
            "metadata": {"name": "acme"},
            "spec": {"tenantId": "acme", "modules": [{"name": "im", "concurrency": "5"}]},
        }))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("spec.modules[0].concurrency: invalid type: string \"5\""),
            "{e}"
        );
        // A list where an object belongs is not read field by field as a
        // tuple ("[0]: invalid type: string, expected ObjectMeta").
        let e = parse::<TenantSubscription>(json!([""]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the object is a list, not a mapping of fields");
    }

    #[test]
    fn a_refused_subscription_is_named_as_written() {
        // A name that cannot name children is refused; the refusal quotes
        // it, so "{" does not read as part of the sentence.
        let sub: TenantSubscription = parse(json!({
            "apiVersion": "capacity.tenancy.dev/v1alpha1", "kind": "TenantSubscription",
            "metadata": {"name": "{"}, "spec": {"tenantId": "acme", "modules": []},
        }))
        .unwrap();
        let e = render_yaml(&sub, &capacity::Catalogue::default(), Timestamp::UNIX_EPOCH)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("subscription \"{\" cannot be applied:\n  metadata.name: \"{\" is not a DNS-1035 label"),
            "{e}"
        );
    }
}
