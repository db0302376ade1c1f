//! Image references as registries read them (the distribution project's grammar):
//! `[host[:port]/]path[:tag][@algorithm:hex]`, so `::: not an image ref` is refused
//! where it is written rather than when a node tries to pull it.

/// Docker's bound on a repository name.
const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;

pub fn check_image_reference(reference: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{reference:?} is not an image reference: {why}"));
    if reference.is_empty() {
        return bad("empty");
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return bad("a digest is ALGORITHM:HEX");
        };
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("a digest is ALGORITHM:HEX, with at least 32 hex digits");
        }
    }
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a
    // registry's port).
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= MAX_TAG
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return bad(
                "a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            );
        }
    }
    if name.len() > MAX_NAME {
        return bad("the name is longer than 255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    let is_host = components.len() > 1
        && (first.contains(['.', ':'])
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase()));
    if is_host {
        let host_ok = !first.is_empty()
            && first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !host_ok {
            return bad("the registry host has characters a host cannot");
        }
        components.remove(0);
    }
    for c in components {
        if !path_component(c) {
            return bad(
                "each name component is lowercase letters and digits, separated by '.', '_', '__' or '-'",
            );
        }
    }
    Ok(())
}

fn path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&f), Some(&l)) if alnum(f) && alnum(l) => {}
        _ => return false,
    }
    // Separators between alphanumerics: one '.', one or two '_', or any run of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_registries_accept() {
        for r in [
            "x",
            "busybox",
            "local/busybox:1",
            "docker.io/library/busybox:1.36",
            "localhost:5000/app/web:v1.2.3-rc_1",
            "127.0.0.1:5000/a__b/c-d--e.f:latest",
            "ghcr.io/owner/img:1",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox:1@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image_reference(r), Ok(()), "{r}");
        }
    }

    #[test]
    fn references_registries_refuse() {
        for r in [
            "",
            "::: not an image ref",
            "Busybox",
            "bad name",
            "a//b",
            "a/b:",
            "a:-tag",
            "a@sha256:abc",
            "-a",
            "a..b",
            "a___b",
            &"a".repeat(256),
            &format!("a:{}", "t".repeat(129)),
        ] {
            assert!(check_image_reference(r).is_err(), "{r}");
        }
    }
}
