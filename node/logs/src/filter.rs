//! Filters, as Fluentd's `<filter>`: every filter whose pattern takes an event's tag
//! applies, in order. `grep` keeps an event only if each `include` field matches its
//! regex (Fluentd's `<regexp>`s are all required) and no `exclude` field matches
//! (any one drops it); a missing field never matches. `modify` changes the record:
//! `rename`, then `remove`, then `add` (overwriting), then `nest` (keys moved under
//! one map) and `lift` (a map's keys moved to the top). Fields are top-level keys.

use regex::Regex;
use rmpv::Value;

use crate::event::Event;
use crate::tag::TagPattern;

#[derive(Debug, Clone)]
pub enum Action {
    Grep {
        include: Vec<(String, Regex)>,
        exclude: Vec<(String, Regex)>,
    },
    Modify(Modify),
}

#[derive(Debug, Clone, Default)]
pub struct Modify {
    pub rename: Vec<(String, String)>,
    pub remove: Vec<String>,
    pub add: Vec<(String, Value)>,
    /// Fields set from the event's tag (after `add`): `{tag}` and `{tag_parts[N]}`
    /// in text, as Fluentd's record_transformer has them, so a task's service and
    /// name reach its records from a tag such as `task.{service}.{task}`.
    pub add_from_tag: Vec<(String, TagText)>,
    /// Keys moved under a map of this name.
    pub nest: Option<(String, Vec<String>)>,
    /// A map whose keys move to the top (it goes).
    pub lift: Option<String>,
}

/// Text with `{tag}` and `{tag_parts[N]}` in it, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagText(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Tag,
    Part(usize),
}

impl TagText {
    /// None when `text` names no part of the tag (a plain value).
    pub fn parse(text: &str) -> Option<TagText> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut named = false;
        while let Some(open) = rest.find('{') {
            let after = &rest[open..];
            let (piece, len) = if after.starts_with("{tag}") {
                (Piece::Tag, "{tag}".len())
            } else if let Some(n) = after
                .strip_prefix("{tag_parts[")
                .and_then(|r| r.split_once("]}"))
                .and_then(|(n, _)| n.parse::<usize>().ok().map(|i| (i, n.len())))
            {
                (Piece::Part(n.0), "{tag_parts[".len() + n.1 + "]}".len())
            } else {
                pieces.push(Piece::Text(rest[..open + 1].to_string()));
                rest = &rest[open + 1..];
                continue;
            };
            named = true;
            pieces.push(Piece::Text(rest[..open].to_string()));
            pieces.push(piece);
            rest = &rest[open + len..];
        }
        pieces.push(Piece::Text(rest.to_string()));
        named.then_some(TagText(pieces))
    }

    /// The text for `tag`; a part the tag does not have is empty.
    pub fn render(&self, tag: &str) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Tag => out.push_str(tag),
                Piece::Part(i) => out.push_str(tag.split('.').nth(*i).unwrap_or("")),
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub pattern: TagPattern,
    pub action: Action,
}

/// What a record's value reads as for a regex: strings as they are, numbers and
/// booleans as written; maps, arrays and binary do not match.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.as_str().map(str::to_string),
        Value::Integer(i) => Some(i.to_string()),
        Value::F32(f) => Some(f.to_string()),
        Value::F64(f) => Some(f.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn pairs(record: &mut Value) -> Option<&mut Vec<(Value, Value)>> {
    match record {
        Value::Map(p) => Some(p),
        _ => None,
    }
}

fn get<'a>(record: &'a Value, key: &str) -> Option<&'a Value> {
    match record {
        Value::Map(p) => p
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn take(record: &mut Value, key: &str) -> Option<Value> {
    let p = pairs(record)?;
    let i = p.iter().position(|(k, _)| k.as_str() == Some(key))?;
    Some(p.remove(i).1)
}

fn set(record: &mut Value, key: &str, value: Value) {
    if let Some(p) = pairs(record) {
        match p.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            Some((_, v)) => *v = value,
            None => p.push((Value::from(key), value)),
        }
    }
}

impl Action {
    /// Applies to one record of an event tagged `tag`; false: the event is dropped
    /// (grep).
    pub fn apply(&self, record: &mut Value, tag: &str) -> bool {
        match self {
            Action::Grep { include, exclude } => {
                let matches = |(key, re): &(String, Regex)| {
                    get(record, key)
                        .and_then(text)
                        .is_some_and(|t| re.is_match(&t))
                };
                include.iter().all(matches) && !exclude.iter().any(matches)
            }
            Action::Modify(m) => {
                for (from, to) in &m.rename {
                    if let Some(v) = take(record, from) {
                        set(record, to, v);
                    }
                }
                for key in &m.remove {
                    take(record, key);
                }
                for (key, value) in &m.add {
                    set(record, key, value.clone());
                }
                for (key, text) in &m.add_from_tag {
                    set(record, key, Value::from(text.render(tag)));
                }
                if let Some((under, keys)) = &m.nest {
                    let moved: Vec<(Value, Value)> = keys
                        .iter()
                        .filter_map(|k| take(record, k).map(|v| (Value::from(k.as_str()), v)))
                        .collect();
                    if !moved.is_empty() {
                        set(record, under, Value::Map(moved));
                    }
                }
                if let Some(key) = &m.lift {
                    match take(record, key) {
                        Some(Value::Map(inner)) => {
                            for (k, v) in inner {
                                if let Some(k) = k.as_str() {
                                    set(record, k, v);
                                }
                            }
                        }
                        Some(other) => set(record, key, other),
                        None => {}
                    }
                }
                true
            }
        }
    }
}

/// Runs every filter that takes the event's tag; None when one dropped it.
pub fn run(filters: &[Filter], mut event: Event) -> Option<Event> {
    for f in filters.iter().filter(|f| f.pattern.matches(&event.tag)) {
        if !f.action.apply(&mut event.record, &event.tag) {
            return None;
        }
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn rec(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    fn ev(tag: &str, record: Value) -> Event {
        Event {
            tag: tag.into(),
            time: EventTime::default(),
            record,
        }
    }

    fn re(s: &str) -> Regex {
        Regex::new(s).expect("regex")
    }

    #[test]
    fn grep_keeps_what_every_include_matches_and_no_exclude_does() {
        let grep = Action::Grep {
            include: vec![("log".into(), re("ERROR|WARN")), ("code".into(), re("^5"))],
            exclude: vec![("log".into(), re("healthz"))],
        };
        let keep = |r: Value| grep.apply(&mut r.clone(), "t");
        assert!(keep(rec(&[
            ("log", "ERROR db".into()),
            ("code", 503.into())
        ])));
        assert!(!keep(rec(&[
            ("log", "ERROR db".into()),
            ("code", 200.into())
        ])));
        assert!(!keep(rec(&[
            ("log", "ERROR healthz".into()),
            ("code", 500.into())
        ])));
        assert!(
            !keep(rec(&[("code", 500.into())])),
            "a missing field never matches"
        );
    }

    #[test]
    fn modify_renames_removes_adds_nests_and_lifts_in_that_order() {
        let m = Action::Modify(Modify {
            rename: vec![("msg".into(), "message".into())],
            remove: vec!["secret".into()],
            add: vec![("cluster".into(), "prod".into())],
            add_from_tag: vec![(
                "from".into(),
                TagText::parse("{tag_parts[1]}/{tag_parts[2]} of {tag}").expect("names the tag"),
            )],
            nest: Some(("task".into(), vec!["service".into(), "slot".into()])),
            lift: Some("kubernetes".into()),
        });
        let mut r = rec(&[
            ("msg", "hi".into()),
            ("secret", "x".into()),
            ("service", "api".into()),
            ("slot", 1.into()),
            ("kubernetes", rec(&[("pod", "p".into())])),
        ]);
        assert!(m.apply(&mut r, "task.api.api_1"));
        assert_eq!(
            r,
            rec(&[
                ("message", "hi".into()),
                ("cluster", "prod".into()),
                ("from", "api/api_1 of task.api.api_1".into()),
                (
                    "task",
                    rec(&[("service", "api".into()), ("slot", 1.into())])
                ),
                ("pod", "p".into()),
            ])
        );
    }

    #[test]
    fn tag_text_names_parts_and_leaves_other_braces_alone() {
        assert_eq!(TagText::parse("plain {json: 1}"), None);
        let t = TagText::parse("{x} {tag_parts[0]}.{tag_parts[9]}|{tag}").expect("named");
        assert_eq!(t.render("a.b"), "{x} a.|a.b");
        assert_eq!(
            TagText::parse("{tag_parts[x]}"),
            None,
            "not an index: plain text"
        );
    }

    #[test]
    fn filters_apply_in_order_to_the_tags_they_match() {
        let filters = vec![
            Filter {
                pattern: TagPattern::new("task.**").expect("p"),
                action: Action::Grep {
                    include: vec![("log".into(), re("ERROR"))],
                    exclude: vec![],
                },
            },
            Filter {
                pattern: TagPattern::new("**").expect("p"),
                action: Action::Modify(Modify {
                    add: vec![("cluster".into(), "prod".into())],
                    ..Default::default()
                }),
            },
        ];
        assert!(run(&filters, ev("task.api", rec(&[("log", "ok".into())]))).is_none());
        let kept = run(&filters, ev("file.app", rec(&[("log", "ok".into())]))).expect("kept");
        assert_eq!(get(&kept.record, "cluster"), Some(&Value::from("prod")));
    }
}
