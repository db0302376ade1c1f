//! The git side: a bare mirror per GitSync on the server's disk, fetched into so that a
//! sync moves only new objects, and the manifests read out of a commit's tree without a
//! work tree. Everything here blocks (gix's network client is blocking); callers run it
//! on a blocking thread.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;
use gix::remote::Direction;

/// What went wrong talking to the repository or reading it.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{doing}: {message}")]
    Git { doing: String, message: String },
    #[error("{0}")]
    NotFound(String),
}

/// `e` while `doing`, with its whole chain: gix's top-level messages alone rarely name
/// the cause.
fn git_err(doing: impl Into<String>, e: impl std::error::Error) -> MirrorError {
    MirrorError::Git {
        doing: doing.into(),
        message: shoal_api::error_chain(&e),
    }
}

/// A manifest file at a revision: its path in the repository and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// Whether `r` names a commit rather than a branch or tag.
fn is_commit_id(r: &str) -> bool {
    (7..=40).contains(&r.len()) && r.chars().all(|c| c.is_ascii_hexdigit())
}

/// Fetches `git_ref` (branch, tag or commit id) of `url` into the bare mirror at `dir`
/// (created on first use) and returns the commit it names, as a full hex id.
///
/// A branch or tag is looked up in what the server advertises now, not in the mirror's
/// refs, so a branch deleted on the server is an error rather than a stale success.
pub fn fetch(
    dir: &Path,
    url: &str,
    git_ref: &str,
    interrupt: &AtomicBool,
) -> Result<String, MirrorError> {
    // reqwest is built without a crypto provider of its own: use ring, as image pulls do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let repo = if dir.join("HEAD").exists() {
        gix::open(dir).map_err(|e| git_err(format!("opening the mirror {}", dir.display()), e))?
    } else {
        std::fs::create_dir_all(dir).map_err(|e| git_err("creating the mirror", e))?;
        gix::init_bare(dir).map_err(|e| git_err("creating the mirror", e))?
    };
    let specs: Vec<String> = if is_commit_id(git_ref) {
        vec![
            "+refs/heads/*:refs/remotes/origin/*".into(),
            "+refs/tags/*:refs/tags/*".into(),
        ]
    } else {
        vec![
            format!("+refs/heads/{git_ref}:refs/remotes/origin/{git_ref}"),
            format!("+refs/tags/{git_ref}:refs/tags/{git_ref}"),
        ]
    };
    let remote = repo
        .remote_at(url)
        .map_err(|e| git_err(format!("using the url {url}"), e))?
        .with_refspecs(specs.iter().map(|s| s.as_str()), Direction::Fetch)
        .map_err(|e| git_err(format!("fetching {git_ref}"), e))?;
    let connecting = format!("fetching {git_ref} from {url}");
    let connection = remote
        .connect(Direction::Fetch)
        .map_err(|e| git_err(connecting.clone(), e))?;
    let outcome = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| git_err(connecting.clone(), e))?
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| git_err(connecting.clone(), e))?;

    let target = if is_commit_id(git_ref) {
        repo.rev_parse_single(git_ref)
            .map_err(|_| {
                MirrorError::NotFound(format!(
                    "commit {git_ref} is not in any branch or tag of {url}"
                ))
            })?
            .detach()
    } else {
        let advertised = |full: &str| {
            outcome.ref_map.mappings.iter().find_map(|m| {
                (m.remote.as_name().map(|n| n.as_bytes()) == Some(full.as_bytes()))
                    .then(|| m.remote.as_id().map(|id| id.to_owned()))
                    .flatten()
            })
        };
        advertised(&format!("refs/heads/{git_ref}"))
            .or_else(|| advertised(&format!("refs/tags/{git_ref}")))
            .ok_or_else(|| {
                MirrorError::NotFound(format!("{url} has no branch or tag named {git_ref}"))
            })?
    };
    let commit = repo
        .find_object(target)
        .map_err(|e| git_err(format!("reading {git_ref}"), e))?
        .peel_to_commit()
        .map_err(|e| git_err(format!("{git_ref} does not name a commit"), e))?;
    Ok(commit.id.to_string())
}

/// Reads every `.yaml` / `.yml` file under `path` (the whole tree when empty) at
/// `revision`, in path order.
pub fn read_manifests(
    dir: &Path,
    revision: &str,
    path: &str,
) -> Result<Vec<SourceFile>, MirrorError> {
    let repo = gix::open(dir).map_err(|e| git_err("opening the mirror", e))?;
    let id = gix::ObjectId::from_hex(revision.as_bytes())
        .map_err(|e| git_err(format!("revision {revision}"), e))?;
    let root = repo
        .find_object(id)
        .map_err(|e| git_err(format!("reading {revision}"), e))?
        .peel_to_tree()
        .map_err(|e| git_err(format!("reading the tree of {revision}"), e))?;
    let folder = path.trim_matches('/');
    let tree = if folder.is_empty() {
        root
    } else {
        let entry = root
            .lookup_entry_by_path(folder)
            .map_err(|e| git_err(format!("looking up {folder}"), e))?
            .ok_or_else(|| {
                MirrorError::NotFound(format!("{folder}/ does not exist at {revision}"))
            })?;
        entry
            .object()
            .map_err(|e| git_err(format!("reading {folder}"), e))?
            .peel_to_tree()
            .map_err(|_| MirrorError::NotFound(format!("{folder} is not a folder at {revision}")))?
    };
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| git_err(format!("listing {revision}"), e))?;
    let mut files = Vec::new();
    for entry in recorder.records {
        let name = entry.filepath.to_str_lossy();
        let is_manifest = name.ends_with(".yaml") || name.ends_with(".yml");
        if !entry.mode.is_blob() || !is_manifest {
            continue;
        }
        let full = if folder.is_empty() {
            name.into_owned()
        } else {
            format!("{folder}/{name}")
        };
        let blob = repo
            .find_object(entry.oid)
            .map_err(|e| git_err(format!("reading {full}"), e))?;
        let text = String::from_utf8(blob.data.clone())
            .map_err(|_| MirrorError::NotFound(format!("{full} is not UTF-8 text")))?;
        files.push(SourceFile { path: full, text });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The mirror folder of GitSync `name` for `url`: `<name>-<digest of the url>`, so a
/// new url starts a new mirror.
pub fn folder_name(name: &str, url: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(url.as_bytes());
    format!("{name}-{}", hex::encode(&hash[..6]))
}

/// Removes GitSync `name`'s mirrors under `root` other than `keep` (all when None): what
/// an old url or a deleted GitSync left behind.
pub fn remove_stale(root: &Path, name: &str, keep: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(folder) = file_name.to_str() else {
            continue;
        };
        let is_its = folder
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|h| h.len() == 12 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if is_its && Some(folder) != keep {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(folder, error = %e, "cannot remove an old git mirror");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_testkit::git::GitRepo;

    #[test]
    fn fetches_branches_tags_and_commits_and_reads_only_manifests_under_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = GitRepo::new(&tmp.path().join("git"));
        repo.write("deploy/a.yaml", "a: 1\n");
        repo.write("deploy/apps/b.yml", "b: 2\n");
        repo.write("deploy/notes.txt", "not a manifest");
        repo.write("outside.yaml", "c: 3\n");
        repo.commit("one");
        repo.tag("v1");
        let url = format!("file://{}/cluster.git", repo.repos().display());
        let mirror = tmp.path().join("mirror");
        let stop = AtomicBool::new(false);

        let first = fetch(&mirror, &url, "main", &stop).unwrap();
        let files = read_manifests(&mirror, &first, "deploy/").unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["deploy/a.yaml", "deploy/apps/b.yml"]);
        assert_eq!(files[0].text, "a: 1\n");
        assert_eq!(fetch(&mirror, &url, "v1", &stop).unwrap(), first);

        repo.write("deploy/a.yaml", "a: 2\n");
        repo.commit("two");
        let second = fetch(&mirror, &url, "main", &stop).unwrap();
        assert_ne!(second, first);
        let text = &read_manifests(&mirror, &second, "deploy").unwrap()[0].text;
        assert_eq!(text, "a: 2\n");
        // A commit id: the older one, still reachable.
        assert_eq!(fetch(&mirror, &url, &first[..12], &stop).unwrap(), first);

        let err = fetch(&mirror, &url, "nope", &stop).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("matched"), "{err}");
        let err = read_manifests(&mirror, &second, "missing")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing/ does not exist"), "{err}");
        let err = fetch(&mirror, "file:///nonexistent/repo", "main", &stop).unwrap_err();
        assert!(matches!(err, MirrorError::Git { .. }), "{err}");
    }

    #[test]
    fn only_the_named_gitsyncs_other_mirrors_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let keep = folder_name("prod", "https://a/x.git");
        let old = folder_name("prod", "https://b/x.git");
        let other = folder_name("prod-eu", "https://a/x.git");
        for f in [&keep, &old, &other, &"prod-notamirror".to_string()] {
            std::fs::create_dir_all(root.path().join(f)).unwrap();
        }
        remove_stale(root.path(), "prod", Some(&keep));
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![keep.clone(), other.clone(), "prod-notamirror".to_string()];
        want.sort();
        assert_eq!(left, want);
        remove_stale(root.path(), "prod", None);
        assert!(!root.path().join(&keep).exists());
    }
}
