//! Tag patterns as Fluentd's `<match>` has them: a tag is parts joined by dots;
//! `*` matches one part (or what is left of one: `app.web*`), `**` zero or more parts
//! (`app.**` matches `app` itself), `{a,b}` either pattern. A pattern is compiled
//! once into an anchored regular expression (the regex crate: linear time whatever
//! the tag), so matching an event costs no more than reading its tag. A tag template
//! (`task.{service}.{task}`) is checked to render a tag whatever it is given.

use regex::Regex;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("a pattern cannot be empty")]
    Empty,
    #[error("{pattern:?}: {why}")]
    Bad { pattern: String, why: String },
}

/// A compiled tag pattern.
#[derive(Debug, Clone)]
pub struct TagPattern {
    text: String,
    regex: Regex,
}

impl PartialEq for TagPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// Braces inside braces, at most.
const MAX_BRACES: usize = 8;

impl TagPattern {
    pub fn new(text: &str) -> Result<TagPattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let bad = |why: &str| PatternError::Bad {
            pattern: text.to_string(),
            why: why.to_string(),
        };
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::from("^");
        let mut depth = 0usize;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let at_part_start = i == 0 || matches!(chars[i - 1], '.' | '{' | ',');
            match c {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    if !at_part_start {
                        return Err(bad("`**` must be a whole part (`a.**`, `**.b`)"));
                    }
                    let next = chars.get(i + 2);
                    match next {
                        // `**.` : zero or more parts, each followed by a dot
                        Some('.') => {
                            out.push_str(r"(?:[^.]+\.)*");
                            i += 3;
                        }
                        None | Some('}') | Some(',') => {
                            // After `x.` the dot is optional: `x.**` matches `x`.
                            if out.ends_with(r"\.") {
                                out.truncate(out.len() - 2);
                                out.push_str(r"(?:\..+)?");
                            } else {
                                out.push_str(".*");
                            }
                            i += 2;
                        }
                        Some(_) => return Err(bad("`**` must be a whole part (`a.**`, `**.b`)")),
                    }
                    continue;
                }
                '*' => out.push_str("[^.]*"),
                '{' => {
                    depth += 1;
                    if depth > MAX_BRACES {
                        return Err(bad("braces nest too deep"));
                    }
                    out.push_str("(?:");
                }
                ',' if depth > 0 => out.push('|'),
                '}' if depth > 0 => {
                    depth -= 1;
                    out.push(')');
                }
                '}' | ',' => return Err(bad("`}` or `,` outside braces")),
                '.' => {
                    if at_part_start
                        || chars
                            .get(i + 1)
                            .is_none_or(|n| matches!(n, '.' | '}' | ','))
                    {
                        return Err(bad("an empty part (two dots, or a dot at an end)"));
                    }
                    out.push_str(r"\.");
                }
                c if c.is_whitespace() || c.is_control() => {
                    return Err(bad("tags have no spaces or control characters"))
                }
                c => out.push_str(&regex::escape(&c.to_string())),
            }
            i += 1;
        }
        if depth > 0 {
            return Err(bad("a `{` is never closed"));
        }
        out.push('$');
        let regex = Regex::new(&out).map_err(|e| bad(&e.to_string()))?;
        Ok(TagPattern {
            text: text.to_string(),
            regex,
        })
    }

    pub fn matches(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for TagPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The index of the first pattern `tag` matches: Fluentd routes an event to the
/// first `<match>` that takes it.
pub fn first_match<'a>(
    patterns: impl IntoIterator<Item = &'a TagPattern>,
    tag: &str,
) -> Option<usize> {
    patterns.into_iter().position(|p| p.matches(tag))
}

/// A tag template that cannot render a tag.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("tag template {template:?}: {why}")]
pub struct TemplateError {
    pub template: String,
    pub why: String,
}

/// What a tag template may name.
pub const PLACEHOLDERS: [&str; 3] = ["service", "task", "node"];

/// A tag template, checked: placeholders it knows, and a valid tag whatever they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate(String);

impl TagTemplate {
    pub fn new(template: &str) -> Result<TagTemplate, TemplateError> {
        let bad = |why: String| TemplateError {
            template: template.to_string(),
            why,
        };
        let mut rest = template;
        let mut sample = String::new();
        while let Some(open) = rest.find('{') {
            sample.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad("a `{` is never closed".into()))?;
            let name = &rest[open + 1..open + close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(bad(format!(
                    "unknown placeholder {{{name}}}; known: {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                )));
            }
            sample.push('x');
            rest = &rest[open + close + 1..];
        }
        sample.push_str(rest);
        // What it renders to must be a tag a pattern can name literally.
        TagPattern::new(&sample).map_err(|e| bad(e.to_string()))?;
        if sample.contains(['*', ',']) {
            return Err(bad("a tag has no `*` or `,`".into()));
        }
        Ok(TagTemplate(template.to_string()))
    }

    /// The tag for a task. Names are DNS labels (with dots for a history name); dots
    /// inside a value would add tag parts, so they become `_`.
    pub fn render(&self, service: &str, task: &str, node: &str) -> String {
        let clean = |s: &str| {
            if s.is_empty() {
                "_".to_string()
            } else {
                s.replace('.', "_")
            }
        };
        self.0
            .replace("{service}", &clean(service))
            .replace("{task}", &clean(task))
            .replace("{node}", &clean(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(pattern: &str, yes: &[&str], no: &[&str]) {
        let p = TagPattern::new(pattern).expect(pattern);
        for t in yes {
            assert!(p.matches(t), "{pattern} should match {t}");
        }
        for t in no {
            assert!(!p.matches(t), "{pattern} should not match {t}");
        }
    }

    #[test]
    fn fluentd_semantics() {
        check("a.b", &["a.b"], &["a", "a.b.c", "a.bb", "axb"]);
        check("a.*", &["a.b", "a.c"], &["a", "a.b.c", "b.c"]);
        check("*.b", &["a.b"], &["b", "x.a.b"]);
        check("a.**", &["a", "a.b", "a.b.c"], &["ab", "b.a"]);
        check("**.z", &["z", "a.z", "a.b.z"], &["za", "a.zz"]);
        check("**", &["a", "a.b.c", "x"], &[]);
        check("a.**.z", &["a.z", "a.b.z", "a.b.c.z"], &["a", "az", "a.b"]);
        check("{a,b}.*", &["a.x", "b.x"], &["c.x", "a", "ab.x"]);
        check(
            "task.{api,web}.**",
            &["task.api", "task.web.web-1", "task.api.a.b"],
            &["task.db.x", "task", "task.apiweb"],
        );
        check(
            "app.web*",
            &["app.web", "app.web1"],
            &["app.we", "app.web1.x"],
        );
        check("{a.**,b}", &["a", "a.x.y", "b"], &["b.x", "c"]);
    }

    #[test]
    fn bad_patterns_say_why() {
        for bad in [
            "", "a..b", ".a", "a.", "{a,b", "a}", "a,b", "a b", "a**", "**a", "a.**b",
        ] {
            assert!(TagPattern::new(bad).is_err(), "{bad:?} accepted");
        }
        let err = TagPattern::new("{a,b").expect_err("unclosed").to_string();
        assert!(err.contains("never closed"), "{err}");
    }

    #[test]
    fn the_first_matching_route_wins() {
        let routes = ["task.api.**", "task.**", "**"].map(|p| TagPattern::new(p).expect(p));
        assert_eq!(first_match(&routes, "task.api.x"), Some(0));
        assert_eq!(first_match(&routes, "task.web"), Some(1));
        assert_eq!(first_match(&routes, "syslog"), Some(2));
    }

    #[test]
    fn templates_render_tags_and_refuse_what_they_cannot() {
        let t = TagTemplate::new("task.{service}.{task}").expect("template");
        assert_eq!(t.render("api", "api.1", "n1"), "task.api.api_1");
        assert_eq!(t.render("", "solo", "n1"), "task._.solo");
        for bad in ["task.{svc}", "task.{service", "task..{task}", "task.*", ""] {
            assert!(TagTemplate::new(bad).is_err(), "{bad:?} accepted");
        }
        let err = TagTemplate::new("t.{pod}")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("{service}, {task}, {node}"), "{err}");
    }

    fn part() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,6}"
    }

    proptest! {
        #[test]
        fn any_text_compiles_or_is_refused_without_panicking(text in "\\PC{0,40}") {
            let _ = TagPattern::new(&text);
        }

        #[test]
        fn a_literal_tag_matches_itself_and_double_star_matches_all(parts in prop::collection::vec(part(), 1..6)) {
            let tag = parts.join(".");
            prop_assert!(TagPattern::new(&tag).unwrap().matches(&tag));
            prop_assert!(TagPattern::new("**").unwrap().matches(&tag));
            let head = format!("{}.**", parts[0]);
            prop_assert!(TagPattern::new(&head).unwrap().matches(&tag));
            let stars = vec!["*"; parts.len()].join(".");
            prop_assert!(TagPattern::new(&stars).unwrap().matches(&tag));
            let one_more = format!("{stars}.*");
            prop_assert!(!TagPattern::new(&one_more).unwrap().matches(&tag));
        }
    }
}
