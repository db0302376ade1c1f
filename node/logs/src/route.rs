//! Routing, as Fluentd's `<match>`: an event goes to the first output whose pattern
//! takes its tag; an output of type `copy` sends it on to several. The decision is
//! a function of the tag alone, so it is cached per tag (a pipeline sees few
//! distinct tags); the cache is bounded and simply cleared when full.

use std::collections::HashMap;

use crate::tag::TagPattern;

/// Tags remembered, at most.
const CACHE: usize = 4096;

pub struct Router {
    /// Each output's pattern, in the manifest's order.
    patterns: Vec<TagPattern>,
    /// For each output, where it copies to (empty: it is a sink itself).
    copies: Vec<Vec<usize>>,
    cache: HashMap<String, Vec<usize>>,
}

impl Router {
    /// `copies[i]`: the outputs output `i` copies to (a `copy` output), by index.
    pub fn new(patterns: Vec<TagPattern>, copies: Vec<Vec<usize>>) -> Router {
        Router {
            patterns,
            copies,
            cache: HashMap::new(),
        }
    }

    /// The sinks an event tagged `tag` goes to; none when no output takes it (the
    /// pipeline counts it as unmatched, as Fluentd warns "no patterns matched").
    pub fn route(&mut self, tag: &str) -> &[usize] {
        if !self.cache.contains_key(tag) {
            if self.cache.len() >= CACHE {
                self.cache.clear();
            }
            let sinks = match crate::tag::first_match(&self.patterns, tag) {
                Some(i) if self.copies.get(i).is_some_and(|c| !c.is_empty()) => {
                    self.copies[i].clone()
                }
                Some(i) => vec![i],
                None => Vec::new(),
            };
            self.cache.insert(tag.to_string(), sinks);
        }
        self.cache.get(tag).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_match_wins_and_copy_fans_out() {
        let p = |s: &str| TagPattern::new(s).expect(s);
        let mut r = Router::new(
            vec![p("task.{api,web}.**"), p("task.**"), p("audit.*"), p("**")],
            vec![vec![], vec![], vec![0, 3], vec![]],
        );
        assert_eq!(r.route("task.api.api-1"), &[0]);
        assert_eq!(r.route("task.db.db-1"), &[1]);
        assert_eq!(r.route("audit.login"), &[0, 3]);
        assert_eq!(r.route("syslog"), &[3]);
        let mut none = Router::new(vec![p("a")], vec![vec![]]);
        assert!(none.route("b").is_empty());
    }
}
