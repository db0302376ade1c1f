//! Label selectors as `kubectl -l` takes them: `app=web,tier!=db,env in (a,b),!legacy,gpu`.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid label selector {input:?}: {why}")]
pub struct SelectorError {
    input: String,
    why: String,
}

impl Selector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let err = |why: &str| SelectorError {
            input: input.to_string(),
            why: why.to_string(),
        };
        let mut reqs = Vec::new();
        for term in split_terms(input) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(checked_key(key.trim()).map_err(|w| err(&w))?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(checked_key(k.trim()).map_err(|w| err(&w))?, v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(checked_key(k.trim()).map_err(|w| err(&w))?, v.trim().into())
            } else if let Some((k, set)) = split_set(term, " notin ") {
                Requirement::NotIn(
                    checked_key(k).map_err(|w| err(&w))?,
                    set.map_err(|w| err(&w))?,
                )
            } else if let Some((k, set)) = split_set(term, " in ") {
                Requirement::In(
                    checked_key(k).map_err(|w| err(&w))?,
                    set.map_err(|w| err(&w))?,
                )
            } else {
                Requirement::Exists(checked_key(term).map_err(|w| err(&w))?)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, s) => format!("{k} in ({})", s.join(",")),
                Requirement::NotIn(k, s) => format!("{k} notin ({})", s.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        write!(f, "{}", terms.join(","))
    }
}

/// Splits on commas that are not inside a `( .. )` set.
fn split_terms(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms
}

type SetResult = Result<Vec<String>, String>;

fn split_set<'a>(term: &'a str, op: &str) -> Option<(&'a str, SetResult)> {
    let (key, rest) = term.split_once(op)?;
    let rest = rest.trim();
    let set = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_string()).collect())
        .ok_or_else(|| format!("expected a set like (a,b) after{op}"));
    Some((key.trim(), set))
}

fn checked_key(key: &str) -> Result<String, String> {
    crate::meta::check_label_key(key).map(|_| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selects() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let m = |s: &str| Selector::parse(s).unwrap().matches(&l);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, api)"));
        assert!(!m("app notin (web)"));
        assert!(m("!legacy"));
        assert!(!m("legacy"));
        assert!(Selector::parse("bad key=1").is_err());
        assert!(Selector::parse("a in b").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,60}") {
            let _ = Selector::parse(&s);
        }
    }
}
