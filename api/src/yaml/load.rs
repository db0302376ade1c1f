//! YAML text to JSON values, remembering where every field sits.
//!
//! Built on yaml-rust2's event parser rather than serde_yaml so that each node keeps its
//! line and column: type errors and validation problems found later, on the JSON value,
//! can still point at the line the user has to fix. It also lets us bound what a
//! document may cost: input size, nesting depth and nodes after alias expansion.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::validate::{join_index, join_key};

/// Larger inputs are refused before parsing.
pub const MAX_INPUT_BYTES: usize = 8 << 20;
/// Nodes per document, counting every alias expansion (defuses "billion laughs").
pub const MAX_NODES: usize = 200_000;
pub const MAX_DEPTH: usize = 64;

/// Where something is in the input (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Position {
    fn from(m: Marker) -> Self {
        // yaml-rust2 reports 1-based lines and 0-based columns.
        Position {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// One YAML document turned into JSON, with the position of each field path.
#[derive(Debug, Clone)]
pub struct LoadedDoc {
    /// 1-based, counting every document in the stream, empty ones too.
    pub index: usize,
    pub start: Position,
    pub value: Value,
    pub positions: HashMap<String, Position>,
}

impl LoadedDoc {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn position_of(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.positions.get("").copied().unwrap_or(self.start),
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub doc: usize,
    pub position: Position,
    pub message: String,
}

/// Parses every document in `text`. Documents that are empty (or only comments) are
/// returned with a `null` value so the caller can skip them and still count.
pub fn load_all(text: &str) -> Result<Vec<LoadedDoc>, LoadError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(LoadError {
            doc: 0,
            position: Position { line: 1, column: 1 },
            message: format!(
                "input is {} bytes; the limit is {} bytes",
                text.len(),
                MAX_INPUT_BYTES
            ),
        });
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(LoadError {
            doc: builder.docs.len() + 1,
            position: (*e.marker()).into(),
            message: format!("invalid YAML: {}", e.info()),
        });
    }
    match builder.error {
        Some(e) => Err(e),
        None => Ok(builder.docs),
    }
}

enum Frame {
    Seq {
        items: Vec<Value>,
        path: String,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        path: String,
        anchor: usize,
        key: Option<String>,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<LoadedDoc>,
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    positions: HashMap<String, Position>,
    nodes: usize,
    start: Position,
    error: Option<LoadError>,
}

impl Builder {
    fn fail(&mut self, mark: Marker, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(LoadError {
                doc: self.docs.len() + 1,
                position: mark.into(),
                message: message.into(),
            });
        }
    }

    /// The path the next value will have, or None when the next scalar is a map key.
    fn next_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq { items, path, .. }) => Some(join_index(path, items.len())),
            Some(Frame::Map { path, key, .. }) => key.as_ref().map(|k| join_key(path, k)),
        }
    }

    fn count(&mut self, n: usize, mark: Marker) -> bool {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            self.fail(
                mark,
                format!("document has more than {MAX_NODES} nodes (after expanding aliases)"),
            );
            return false;
        }
        true
    }

    fn insert(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, .. }) => {
                if let Some(k) = key.take() {
                    map.insert(k, value);
                }
            }
        }
    }

    fn scalar(
        &mut self,
        text: String,
        style: TScalarStyle,
        anchor: usize,
        tag: Option<Tag>,
        mark: Marker,
    ) {
        if let Some(Frame::Map { map, key, path, .. }) = self.stack.last_mut() {
            if key.is_none() {
                if map.contains_key(&text) {
                    let p = join_key(path, &text);
                    self.fail(mark, format!("{p}: duplicate key {text:?}"));
                    return;
                }
                let p = join_key(path, &text);
                self.positions.insert(p, mark.into());
                *key = Some(text);
                return;
            }
        }
        if let Some(path) = self.next_path() {
            self.positions.entry(path).or_insert(mark.into());
        }
        match resolve_scalar(text, style, tag.as_ref()) {
            Ok(v) => self.insert(v, anchor),
            Err(msg) => self.fail(mark, msg),
        }
    }

    fn open(&mut self, mark: Marker, anchor: usize, is_map: bool) {
        let Some(path) = self.next_path() else {
            self.fail(
                mark,
                "complex mapping keys (lists or mappings as keys) are not supported",
            );
            return;
        };
        if self.stack.len() >= MAX_DEPTH {
            self.fail(mark, format!("nesting deeper than {MAX_DEPTH} levels"));
            return;
        }
        self.positions.entry(path.clone()).or_insert(mark.into());
        self.stack.push(if is_map {
            Frame::Map {
                map: Map::new(),
                path,
                anchor,
                key: None,
            }
        } else {
            Frame::Seq {
                items: Vec::new(),
                path,
                anchor,
            }
        });
    }

    fn close(&mut self) {
        let (value, anchor) = match self.stack.pop() {
            Some(Frame::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
            Some(Frame::Map { map, anchor, .. }) => (Value::Object(map), anchor),
            None => return,
        };
        self.insert(value, anchor);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.stack.clear();
                self.root = None;
                self.anchors.clear();
                self.positions.clear();
                self.nodes = 0;
                self.start = mark.into();
            }
            Event::DocumentEnd => {
                let doc = LoadedDoc {
                    index: self.docs.len() + 1,
                    start: self.start,
                    value: self.root.take().unwrap_or(Value::Null),
                    positions: std::mem::take(&mut self.positions),
                };
                self.docs.push(doc);
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.count(1, mark) {
                    self.scalar(text, style, anchor, tag, mark);
                }
            }
            Event::SequenceStart(anchor, _) => {
                if self.count(1, mark) {
                    self.open(mark, anchor, false);
                }
            }
            Event::MappingStart(anchor, _) => {
                if self.count(1, mark) {
                    self.open(mark, anchor, true);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => {
                if self.next_path().is_none() {
                    self.fail(mark, "aliases cannot be used as mapping keys");
                    return;
                }
                let Some(value) = self.anchors.get(&id).cloned() else {
                    self.fail(mark, "alias to an unknown anchor");
                    return;
                };
                if self.count(node_count(&value), mark) {
                    self.insert(value, 0);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

fn node_count(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(node_count).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(node_count).sum::<usize>(),
        _ => 1,
    }
}

/// YAML 1.2 core schema resolution for plain scalars; quoted scalars are strings.
fn resolve_scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        if tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!" {
            return match tag.suffix.as_str() {
                "str" => Ok(Value::String(text)),
                "null" => Ok(Value::Null),
                "bool" => parse_bool(&text)
                    .map(Value::Bool)
                    .ok_or_else(|| format!("{text:?} is not a boolean")),
                "int" => parse_int(&text).ok_or_else(|| format!("{text:?} is not an integer")),
                "float" => parse_float(&text).ok_or_else(|| format!("{text:?} is not a number"))?,
                other => Err(format!("unsupported tag !!{other}")),
            };
        }
        return Err(format!("unsupported tag {}{}", tag.handle, tag.suffix));
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text));
    }
    if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = parse_bool(&text) {
        return Ok(Value::Bool(b));
    }
    if let Some(i) = parse_int(&text) {
        return Ok(i);
    }
    if let Some(f) = parse_float(&text) {
        return f;
    }
    Ok(Value::String(text))
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(t: &str) -> Option<Value> {
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>().ok()
    } else {
        None
    }?;
    let n = if neg { -parsed } else { parsed };
    if let Ok(i) = i64::try_from(n) {
        Some(Value::Number(i.into()))
    } else {
        u64::try_from(n).ok().map(|u| Value::Number(u.into()))
    }
}

fn parse_float(t: &str) -> Option<Result<Value, String>> {
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), ".inf" | "+.inf" | "-.inf" | ".nan") {
        return Some(Err(format!(
            "{t} is not representable; use a finite number"
        )));
    }
    let looks_numeric = t
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && t.bytes().any(|b| b.is_ascii_digit());
    if !looks_numeric {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    Some(
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{t} is not a finite number")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn positions_and_types() {
        let docs = load_all("a: 1\nb:\n  c: [x, 'y']\n  d: true\n---\n---\ne: 1.5\n").unwrap();
        assert_eq!(docs.len(), 3);
        let d = &docs[0];
        assert_eq!(d.value["a"], Value::from(1));
        assert_eq!(d.value["b"]["c"][1], Value::from("y"));
        assert_eq!(d.value["b"]["d"], Value::from(true));
        assert_eq!(d.position_of("b.d").line, 4);
        assert_eq!(d.position_of("b.c[1]").line, 3);
        assert_eq!(d.position_of("b.zzz").line, 2);
        assert_eq!(docs[1].value, Value::Null);
        assert_eq!(docs[2].index, 3);
        assert_eq!(docs[2].position_of("e").line, 7);
    }

    #[test]
    fn rejects_bad_input() {
        let e = load_all("a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("duplicate key"), "{e:?}");
        assert_eq!(e.position.line, 2);
        let e = load_all("a: [1, 2\n").unwrap_err();
        assert!(e.message.contains("invalid YAML"), "{e:?}");
        let e = load_all("a: *nope\n").unwrap_err();
        assert!(e.message.contains("unknown anchor"), "{e:?}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            let row = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{row}]\n"));
        }
        let e = load_all(&text).unwrap_err();
        assert!(e.message.contains("nodes"), "{e:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(1000) + &"]".repeat(1000);
        assert!(load_all(&text).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "[a-z:\\-\\[\\]{}&*!|>'\" \n#0-9.,?]{0,200}") {
            let _ = load_all(&s);
        }
    }
}
