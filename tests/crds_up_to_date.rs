//! The committed CRD YAML must be exactly what the code generates:
//! regenerate with `cargo run -- crd > crds/crds.yaml`.

#[test]
fn committed_crds_match_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml"))
        .expect("crds/crds.yaml exists");
    let generated = tenant_capacity_operator::api::crds_yaml();
    assert!(
        committed == generated,
        "crds/crds.yaml is out of date; run `cargo run -- crd > crds/crds.yaml`"
    );
}
