//! Rewrites `schemas/testdata/` from the golden values in `nearfield_schemas::golden`.
//! Run after a deliberate schema change: `cargo run -p nearfield-schemas --example golden`.
fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    nearfield_schemas::golden::write_all(&dir)?;
    eprintln!("golden vectors written to {}", dir.display());
    Ok(())
}
