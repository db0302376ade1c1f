//! Writes manifests/schemas/*.json from the kinds' types.

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/schemas");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in shoal_api::schema::schema_files() {
        std::fs::write(dir.join(&name), text)?;
        println!("wrote manifests/schemas/{name}");
    }
    Ok(())
}
