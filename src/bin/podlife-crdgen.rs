//! Prints podlife's CRDs as YAML, generated from the Rust types. `e2e/generate` writes them
//! into manifests/ and the chart; `e2e/check-generated` fails CI when they drift.
fn main() -> anyhow::Result<()> {
    print!("{}", podlife::crd::crds_yaml()?);
    Ok(())
}
