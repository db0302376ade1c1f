//! An error and its causes on one line, for messages people read (events, conditions,
//! the CLI's `error:` lines).

/// `e: cause: cause's cause`, each text once: many errors (reqwest's, hyper's, gix's)
/// repeat their source's message in their own, which would otherwise print twice.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    join_causes(parts)
}

/// Joins texts from outermost to innermost with `: `, leaving out one already said.
pub fn join_causes(parts: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for text in parts {
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_cause_already_in_the_text_is_said_once() {
        let e = E(
            "error sending request for url (http://x/)",
            Some(Box::new(E(
                "error sending request for url (http://x/)",
                Some(Box::new(E("dns error: no such host", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "error sending request for url (http://x/): dns error: no such host"
        );
    }

    #[test]
    fn distinct_causes_are_all_kept_in_order() {
        let e = E(
            "fetch",
            Some(Box::new(E("connect", Some(Box::new(E("refused", None)))))),
        );
        assert_eq!(error_chain(&e), "fetch: connect: refused");
    }
}
