use super::*;
use crate::api::{ModuleProfileSpec, TenantSubscriptionSpec};
use crate::capacity::{Numbers, plan};
use jiff::Timestamp;

fn owner() -> Owner {
    Owner {
        name: "acme".into(),
        namespace: "tenant-acme".into(),
        tenant_id: "acme".into(),
        reference: Some(OwnerReference {
            api_version: "capacity.tenancy.dev/v1alpha1".into(),
            kind: "TenantSubscription".into(),
            name: "acme".into(),
            uid: "1234".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }),
    }
}

fn sample(concurrency: i64) -> CapacityPlan {
    let profile: ModuleProfileSpec = serde_saphyr::from_str(
        "{image: video:1, port: 8443, sessionsPerReplica: 40, resources: {requests: {cpu: '1'}}, scaling: {cpuUtilization: 65}}",
    )
    .unwrap();
    let im: ModuleProfileSpec = serde_saphyr::from_str(
        "{image: im:1, sessionsPerReplica: 1000, resources: {requests: {cpu: '1'}}}",
    )
    .unwrap();
    let spec: TenantSubscriptionSpec = serde_saphyr::from_str(&format!(
        "{{tenantId: acme, modules: [{{name: video-call, concurrency: {concurrency}}}, {{name: real-time-messaging, concurrency: 100}}]}}"
    ))
    .unwrap();
    let mut c = crate::capacity::Catalogue::default();
    c.profiles.insert("video-call".into(), profile);
    c.profiles.insert("real-time-messaging".into(), im);
    plan("acme", &spec, &c, Timestamp::UNIX_EPOCH).unwrap()
}

#[test]
fn every_child_is_labelled_named_and_owned() {
    let children = all_children(&owner(), &sample(1000));
    let kinds: Vec<(&str, &str)> = children
        .iter()
        .map(|c| (c.kind().as_str(), c.name()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("Deployment", "acme-video-call"),
            ("HorizontalPodAutoscaler", "acme-video-call"),
            ("Service", "acme-video-call"),
            ("Deployment", "acme-real-time-messaging"),
            ("HorizontalPodAutoscaler", "acme-real-time-messaging"),
            ("ResourceQuota", "acme-capacity"),
            ("LimitRange", "acme-defaults"),
        ]
    );
    for c in &children {
        let v = c.to_value();
        let labels = &v["metadata"]["labels"];
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGER);
        assert_eq!(labels[LABEL_SUBSCRIPTION], "acme");
        assert_eq!(
            labels.get(LABEL_MODULE).is_none(),
            matches!(c.kind(), ChildKind::Quota | ChildKind::LimitRange),
            "{}",
            c.kind()
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "1234");
        assert_eq!(v["metadata"]["namespace"], "tenant-acme");
        assert_eq!(v["kind"], c.kind().as_str());
        assert_eq!(v["apiVersion"], c.kind().api_resource().api_version);
    }
}

#[test]
fn deployment_leaves_replicas_to_the_hpa() {
    let children = all_children(&owner(), &sample(1000));
    let d = children[0].to_value();
    assert!(d["spec"].get("replicas").is_none());
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8443
    );
    let h = children[1].to_value();
    assert_eq!(h["spec"]["maxReplicas"], 25);
    assert_eq!(h["spec"]["minReplicas"], 1);
    assert_eq!(h["spec"]["scaleTargetRef"]["name"], "acme-video-call");
    assert_eq!(
        h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        65
    );
}

#[test]
fn quota_covers_both_modules() {
    let children = all_children(&owner(), &sample(1000));
    let q = children
        .iter()
        .find(|c| c.kind() == ChildKind::Quota)
        .unwrap()
        .to_value();
    // video 25 + 7 surge, messaging 1 + 1 surge
    assert_eq!(q["spec"]["hard"]["pods"], "34");
    assert_eq!(q["spec"]["hard"]["requests.cpu"], "34");
    // Neither declares memory nor limits: they count at the LimitRange's defaults.
    assert_eq!(q["spec"]["hard"]["requests.memory"], "4352Mi");
    assert_eq!(q["spec"]["hard"]["limits.cpu"], "34");
    assert_eq!(q["spec"]["hard"]["limits.memory"], "34Gi");
    assert!(q["metadata"].get("annotations").is_none());
}

#[test]
fn the_limit_range_gives_pods_that_declare_nothing_the_defaults() {
    let children = all_children(&owner(), &sample(10));
    let l = children
        .iter()
        .find(|c| c.kind() == ChildKind::LimitRange)
        .unwrap()
        .to_value();
    assert_eq!(l["metadata"]["name"], "acme-defaults");
    let item = &l["spec"]["limits"][0];
    assert_eq!(item["type"], "Container");
    assert_eq!(
        item["defaultRequest"],
        serde_json::json!({"cpu": "100m", "memory": "128Mi"})
    );
    assert_eq!(
        item["default"],
        serde_json::json!({"cpu": "1", "memory": "1Gi"})
    );
    assert!(item.get("max").is_none() && item.get("min").is_none());
}

#[test]
fn rendering_is_deterministic_and_the_digest_follows_content() {
    let a = all_children(&owner(), &sample(1000));
    let b = all_children(&owner(), &sample(1000));
    assert_eq!(a, b);
    let c = all_children(&owner(), &sample(2000));
    let hash = |x: &Child| crate::live::digest::of_desired(&mut x.to_value());
    assert_eq!(
        hash(&a[0]),
        hash(&c[0]),
        "the Deployment does not depend on concurrency"
    );
    assert_ne!(hash(&a[1]), hash(&c[1]), "the HPA does");
    let p = sample(2000);
    assert_eq!(
        p.modules[0].numbers,
        Numbers {
            ceiling: 2000,
            max_replicas: 50,
            min_replicas: 1
        }
    );
}

#[test]
fn no_port_no_service() {
    let p = sample(10);
    let children = module_children(&owner(), &p.modules[1]);
    assert!(children.iter().all(|c| c.kind() != ChildKind::Service));
}

/// The checks of the `restricted` Pod Security Standard that a pod spec
/// rendered here could fail (Kubernetes' pod-security-admission policies
/// of that level), as the reasons a namespace enforcing it would give.
fn restricted_violations(pod: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let pod_sc = &pod["securityContext"];
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"] != false {
            out.push("allowPrivilegeEscalation != false".into());
        }
        if sc["privileged"] == true {
            out.push("privileged".into());
        }
        let drop = sc["capabilities"]["drop"].as_array();
        if !drop.is_some_and(|d| d.iter().any(|x| x == "ALL")) {
            out.push("unrestricted capabilities (drop ALL)".into());
        }
        if let Some(add) = sc["capabilities"]["add"].as_array()
            && add.iter().any(|x| x != "NET_BIND_SERVICE")
        {
            out.push("unrestricted capabilities (add)".into());
        }
        let non_root = sc["runAsNonRoot"]
            .as_bool()
            .or(pod_sc["runAsNonRoot"].as_bool());
        if non_root != Some(true) {
            out.push("runAsNonRoot != true".into());
        }
        let user = sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64());
        if user == Some(0) {
            out.push("runAsUser=0".into());
        }
        let seccomp = sc["seccompProfile"]["type"]
            .as_str()
            .or(pod_sc["seccompProfile"]["type"].as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            out.push("seccompProfile".into());
        }
    }
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            out.push(host.into());
        }
    }
    out
}

fn pod_of(security: &str) -> serde_json::Value {
    let profile: ModuleProfileSpec = serde_saphyr::from_str(&format!(
        "{{image: video:1, port: 8443, sessionsPerReplica: 40, security: {security}}}"
    ))
    .unwrap();
    let spec: TenantSubscriptionSpec =
        serde_saphyr::from_str("{tenantId: acme, modules: [{name: video-call, concurrency: 100}]}")
            .unwrap();
    let mut c = crate::capacity::Catalogue::default();
    c.profiles.insert("video-call".into(), profile);
    let p = plan("acme", &spec, &c, Timestamp::UNIX_EPOCH).unwrap();
    let d = deployment(&owner(), &p.modules[0]);
    serde_json::to_value(d.spec.unwrap().template.spec.unwrap()).unwrap()
}

#[test]
fn pods_pass_the_restricted_pod_security_standard_by_default() {
    let pod = pod_of("{}");
    assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "no token unless asked"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        pod["securityContext"].get("runAsUser").is_none(),
        "the image's user"
    );
    let c = &pod["containers"][0]["securityContext"];
    assert!(c["capabilities"].get("add").is_none());
    assert!(c.get("readOnlyRootFilesystem").is_none());
    // The sample above (a profile without `security`) renders the same.
    let plain = all_children(&owner(), &sample(10));
    let d = plain[0].to_value();
    assert_eq!(
        restricted_violations(&d["spec"]["template"]["spec"]),
        Vec::<String>::new()
    );
}

#[test]
fn a_profile_loosens_only_what_it_names() {
    let pod = pod_of(
        "{runAsUser: 10001, runAsGroup: 10001, fsGroup: 2000, readOnlyRootFilesystem: true, addCapabilities: [NET_BIND_SERVICE], serviceAccountToken: true, seccompLocalhostProfile: profiles/rtc.json}",
    );
    assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    let sc = &pod["securityContext"];
    assert_eq!(
        (&sc["runAsUser"], &sc["runAsGroup"], &sc["fsGroup"]),
        (&10001.into(), &10001.into(), &2000.into())
    );
    assert_eq!(
        sc["seccompProfile"],
        serde_json::json!({"type": "Localhost", "localhostProfile": "profiles/rtc.json"})
    );
    assert_eq!(pod["automountServiceAccountToken"], true);
    let c = &pod["containers"][0]["securityContext"];
    assert_eq!(c["readOnlyRootFilesystem"], true);
    assert_eq!(
        c["capabilities"]["add"],
        serde_json::json!(["NET_BIND_SERVICE"])
    );
    assert_eq!(c["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // What the restricted standard forbids is possible, and named so.
    let root = pod_of("{allowRoot: true, addCapabilities: [SYS_ADMIN]}");
    assert_eq!(
        restricted_violations(&root),
        ["unrestricted capabilities (add)", "runAsNonRoot != true"]
    );
}

fn video_with(scaling_and_more: &str, tier: Option<&str>) -> CapacityPlan {
    let profile: ModuleProfileSpec = serde_saphyr::from_str(&format!(
        "{{image: video:1, port: 8443, sessionsPerReplica: 40, tiers: {{uhd: {{sessionsPerReplica: 15}}}}, resources: {{requests: {{cpu: '1'}}}}, {scaling_and_more}}}"
    ))
    .unwrap();
    let tier = tier.map(|t| format!(", tier: {t}")).unwrap_or_default();
    let spec: TenantSubscriptionSpec = serde_saphyr::from_str(&format!(
        "{{tenantId: acme, modules: [{{name: video-call, concurrency: 1000{tier}}}]}}"
    ))
    .unwrap();
    let mut c = crate::capacity::Catalogue::default();
    c.profiles.insert("video-call".into(), profile);
    plan("acme", &spec, &c, Timestamp::UNIX_EPOCH).unwrap()
}

#[test]
fn a_sessions_metric_targets_a_share_of_what_one_replica_carries_per_tier() {
    let sessions = "scaling: {sessions: {metric: rtc_sessions_active}}";
    let h = serde_json::to_value(hpa(&owner(), &video_with(sessions, None).modules[0])).unwrap();
    assert_eq!(
        h["spec"]["metrics"],
        serde_json::json!([{"type": "Pods", "pods": {
            "metric": {"name": "rtc_sessions_active"},
            "target": {"type": "AverageValue", "averageValue": "32"}}}]),
        "80 % of 40 sessions per replica, and no CPU metric unless asked for"
    );
    let h =
        serde_json::to_value(hpa(&owner(), &video_with(sessions, Some("uhd")).modules[0])).unwrap();
    assert_eq!(
        h["spec"]["metrics"][0]["pods"]["target"]["averageValue"],
        "12"
    );
    let both = "scaling: {cpuUtilization: 60, memoryUtilization: 80, sessions: {metric: rtc_sessions_active, targetPercent: 90}}";
    let h = serde_json::to_value(hpa(&owner(), &video_with(both, None).modules[0])).unwrap();
    let types: Vec<&str> = h["spec"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Pods", "Resource", "Resource"]);
    assert_eq!(
        h["spec"]["metrics"][0]["pods"]["target"]["averageValue"],
        "36"
    );
    assert_eq!(
        h["spec"]["metrics"][1]["resource"]["target"]["averageUtilization"],
        60
    );
}

#[test]
fn every_hpa_has_a_bounded_scale_down() {
    for plan in [
        sample(1000),
        video_with(
            "scaling: {scaleDown: {periodSeconds: 30, maxPercent: 5}}",
            None,
        ),
    ] {
        for m in &plan.modules {
            let h = serde_json::to_value(hpa(&owner(), m)).unwrap();
            let down = &h["spec"]["behavior"]["scaleDown"];
            assert_eq!(down["selectPolicy"], "Max", "{h}");
            let policies = down["policies"].as_array().unwrap();
            assert_eq!(policies.len(), 2);
            assert!(down["stabilizationWindowSeconds"].as_i64().unwrap() >= 0);
            assert!(h["spec"]["behavior"]["scaleUp"]["policies"].is_array());
        }
    }
    let h = serde_json::to_value(hpa(&owner(), &sample(1000).modules[0])).unwrap();
    assert_eq!(
        h["spec"]["behavior"]["scaleDown"],
        serde_json::json!({"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 60},
            {"type": "Percent", "value": 10, "periodSeconds": 60}]})
    );
    assert_eq!(
        h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 65,
        "a profile without a sessions metric keeps its CPU target"
    );
    let custom = video_with(
        "scaling: {scaleDown: {periodSeconds: 30, maxPercent: 5}}",
        None,
    );
    let h = serde_json::to_value(hpa(&owner(), &custom.modules[0])).unwrap();
    assert_eq!(
        h["spec"]["behavior"]["scaleDown"]["policies"],
        serde_json::json!([{"type": "Pods", "value": 1, "periodSeconds": 30},
            {"type": "Percent", "value": 5, "periodSeconds": 30}])
    );
    assert_eq!(
        h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
}

#[test]
fn a_pre_stop_hook_drains_each_container() {
    let get = video_with(
        "preStop: {httpGet: {path: /drain}}, terminationGracePeriodSeconds: 3600",
        None,
    );
    let d = serde_json::to_value(deployment(&owner(), &get.modules[0])).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 3600);
    assert_eq!(
        pod["containers"][0]["lifecycle"],
        serde_json::json!({"preStop": {"httpGet": {"path": "/drain", "port": 8443}}}),
        "the port defaults to the profile's"
    );
    let cmd = video_with("preStop: {command: [/bin/drain, --wait]}", None);
    let d = serde_json::to_value(deployment(&owner(), &cmd.modules[0])).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["lifecycle"],
        serde_json::json!({"preStop": {"exec": {"command": ["/bin/drain", "--wait"]}}})
    );
    let none = video_with("scaling: {}", None);
    let d = serde_json::to_value(deployment(&owner(), &none.modules[0])).unwrap();
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]
            .get("lifecycle")
            .is_none()
    );
}

#[test]
fn pods_are_held_to_their_regions_and_spread_over_zones() {
    let mut p = sample(400);
    let m = &mut p.modules[0];
    let pod = |m: &ModulePlan| {
        serde_json::to_value(deployment(&owner(), m).spec.unwrap().template.spec.unwrap()).unwrap()
    };
    // Any node: no affinity, still spread, each revision on its own.
    let any = pod(m);
    assert!(any.get("affinity").is_none(), "{any}");
    assert_eq!(
        any["topologySpreadConstraints"],
        serde_json::json!([{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {
                "capacity.tenancy.dev/subscription": "acme",
                "capacity.tenancy.dev/module": "video-call",
            }},
            "matchLabelKeys": ["pod-template-hash"],
            "nodeAffinityPolicy": "Honor",
            "nodeTaintsPolicy": "Honor",
        }])
    );
    m.regions = vec!["eu-west-1".into(), "us-east-1".into()];
    m.zone_spread.max_skew = 2;
    m.zone_spread.when_unsatisfiable = crate::api::WhenUnsatisfiable::ScheduleAnyway;
    let placed = pod(m);
    assert_eq!(
        placed["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        serde_json::json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west-1", "us-east-1"]}
        ]}]})
    );
    assert_eq!(placed["topologySpreadConstraints"][0]["maxSkew"], 2);
    assert_eq!(
        placed["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "ScheduleAnyway"
    );
}
