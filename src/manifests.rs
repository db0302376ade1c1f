//! Reading manifests from `-f` paths: files, directories (recursively, .yaml/.yml/.json)
//! and `-` for stdin. Every file is checked; all problems are reported together.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use shoal_api::yaml::{decode_manifests, Diagnostic, Manifest};
use shoal_wire::pb;

/// The one `Api.Apply` request for `manifests`, each named by file and document so the
/// server's errors say where they came from (`apply` sends it, `diff` as a dry run).
pub fn apply_request(manifests: &[Manifest], dry_run: bool) -> anyhow::Result<pb::ApplyRequest> {
    Ok(pb::ApplyRequest {
        manifests: manifests
            .iter()
            .map(|m| {
                Ok(pb::Manifest {
                    json: serde_json::to_string(&m.object)?,
                    source: format!("{}: doc {}", m.file, m.doc),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        dry_run,
    })
}

/// Manifests from every path, or every problem in any of them.
pub fn read_all(paths: &[String]) -> anyhow::Result<Vec<Manifest>> {
    if paths.is_empty() {
        bail!("no manifests given: use -f FILE, -f DIR or -f -");
    }
    let mut files = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading manifests from stdin")?;
            files.push(("<stdin>".to_string(), text));
            continue;
        }
        let path = Path::new(p);
        let meta = std::fs::metadata(path).with_context(|| format!("{p}: cannot read"))?;
        let list = if meta.is_dir() {
            walk(path)?
        } else {
            vec![path.to_path_buf()]
        };
        if meta.is_dir() && list.is_empty() {
            bail!("{p}: no .yaml, .yml or .json files in this directory");
        }
        for f in list {
            let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            if len > shoal_api::yaml::MAX_INPUT_BYTES as u64 {
                bail!(
                    "{}: {len} bytes is larger than the {} byte limit",
                    f.display(),
                    shoal_api::yaml::MAX_INPUT_BYTES
                );
            }
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("{}: cannot read", f.display()))?;
            files.push((f.display().to_string(), text));
        }
    }
    let mut manifests = Vec::new();
    let mut problems: Vec<Diagnostic> = Vec::new();
    for (name, text) in files {
        match decode_manifests(&name, &text) {
            Ok(m) => manifests.extend(m),
            Err(d) => problems.extend(d),
        }
    }
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!(
            "{}\nnothing was changed: {} problem(s) found",
            lines.join("\n"),
            problems.len()
        );
    }
    if manifests.is_empty() {
        bail!("no objects found in {}", paths.join(", "));
    }
    Ok(manifests)
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(out)
}
