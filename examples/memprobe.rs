use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ResourceQuota, Service},
};
use std::sync::Arc;
fn rss() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    for l in s.lines() {
        if l.starts_with("VmRSS:") {
            return l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0;
        }
    }
    0.0
}
fn main() {
    println!(
        "sizes: deploy {} hpa {} svc {} quota {} container {} podspec {} meta {}",
        std::mem::size_of::<Deployment>(),
        std::mem::size_of::<HorizontalPodAutoscaler>(),
        std::mem::size_of::<Service>(),
        std::mem::size_of::<ResourceQuota>(),
        std::mem::size_of::<k8s_openapi::api::core::v1::Container>(),
        std::mem::size_of::<k8s_openapi::api::core::v1::PodSpec>(),
        std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>()
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap())
            .unwrap();
    let mut items = v["items"].as_array().unwrap().clone();
    for i in &mut items {
        i["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
    }
    let r0 = rss();
    let mut d = Vec::new();
    let mut h = Vec::new();
    let mut s = Vec::new();
    let mut q = Vec::new();
    for _ in 0..1000 {
        for i in &items {
            match i["kind"].as_str().unwrap() {
                "Deployment" => d.push(Arc::new(
                    serde_json::from_value::<Deployment>(i.clone()).unwrap(),
                )),
                "HorizontalPodAutoscaler" => h.push(Arc::new(
                    serde_json::from_value::<HorizontalPodAutoscaler>(i.clone()).unwrap(),
                )),
                "Service" => s.push(Arc::new(
                    serde_json::from_value::<Service>(i.clone()).unwrap(),
                )),
                _ => q.push(Arc::new(
                    serde_json::from_value::<ResourceQuota>(i.clone()).unwrap(),
                )),
            }
        }
    }
    let r1 = rss();
    println!(
        "1000 tenants typed: {:.1} MiB (d {} h {} s {} q {})",
        r1 - r0,
        d.len(),
        h.len(),
        s.len(),
        q.len()
    );
    let mut vals = Vec::new();
    for _ in 0..1000 {
        for i in &items {
            vals.push(i.clone());
        }
    }
    println!("1000 tenants as Value: {:.1} MiB", rss() - r1);
}
