//! What a LogPipeline must be before it is stored: every pattern, expression and
//! address read as the node will read it, every reference resolved, and no field
//! that its input's or output's `type` would ignore. Each problem names its field.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use regex::Regex;

use super::logpipeline::*;
use crate::meta::{check_label_key, check_label_value, check_name};
use crate::tag::{TagPattern, TagTemplate};
use crate::validate::{Problems, Validate};

impl Validate for LogPipelineSpec {
    fn validate(&self, p: &mut Problems) {
        self.check(p);
    }
}

impl LogPipelineSpec {
    /// Every problem of the spec, as a node will read it.
    pub fn check(&self, p: &mut Problems) {
        for (key, value) in &self.node_selector {
            let path = crate::validate::join_key("spec.nodeSelector", key);
            if let Err(why) = check_label_key(key).and_then(|()| check_label_value(value)) {
                p.push(path, why);
            }
        }
        if self.inputs.is_empty() {
            p.push("spec.inputs", "a pipeline needs at least one input");
        }
        if self.outputs.is_empty() {
            p.push("spec.outputs", "a pipeline needs at least one output");
        }
        let mut names = BTreeSet::new();
        let mut listens = BTreeSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let path = format!("spec.inputs[{i}]");
            unique_name(p, &path, &input.name, &mut names, "input");
            check_input(p, &path, input);
            if let Some(listen) = &input.listen {
                let transport = if listen.starts_with("udp://") {
                    "udp"
                } else {
                    "tcp"
                };
                let port = listen.rsplit(':').next().unwrap_or_default();
                if !listens.insert((transport, port.to_string())) {
                    p.push(
                        format!("{path}.listen"),
                        format!("port {port}/{transport} is already an earlier input's"),
                    );
                }
            }
        }
        for (i, filter) in self.filters.iter().enumerate() {
            check_filter(p, &format!("spec.filters[{i}]"), filter);
        }
        let mut names = BTreeSet::new();
        for (i, output) in self.outputs.iter().enumerate() {
            let path = format!("spec.outputs[{i}]");
            unique_name(p, &path, &output.name, &mut names, "output");
            check_output(p, &path, output, &self.outputs);
        }
    }
}

fn unique_name(p: &mut Problems, path: &str, name: &str, seen: &mut BTreeSet<String>, what: &str) {
    let path = format!("{path}.name");
    if name.is_empty() {
        p.push(path, "required field is missing");
    } else if let Err(why) = check_name(name, false) {
        p.push(path, why);
    } else if !seen.insert(name.to_string()) {
        p.push(path, format!("another {what} is already named {name:?}"));
    }
}

/// Refuses each set field that `kind` does not use.
fn only(p: &mut Problems, path: &str, kind: &str, allowed: &[&str], set: &[(&str, bool)]) {
    for (field, is_set) in set {
        if *is_set && !allowed.contains(field) {
            p.push(
                format!("{path}.{field}"),
                format!("not a field of a {kind} (it has: {})", allowed.join(", ")),
            );
        }
    }
}

fn required(p: &mut Problems, path: &str, kind: &str, field: &str, value: &Option<String>) {
    if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
        p.push(
            format!("{path}.{field}"),
            format!("a {kind} needs `{field}`"),
        );
    }
}

fn check_regex(p: &mut Problems, path: String, text: &str) -> Option<Regex> {
    match Regex::new(text) {
        Ok(re) => Some(re),
        Err(e) => {
            // The regex crate's message spans lines (it draws the spot); keep the last.
            let why = e.to_string();
            let why = why.lines().last().unwrap_or("").trim().to_string();
            p.push(path, format!("{text:?} is not a regular expression: {why}"));
            None
        }
    }
}

fn check_pattern(p: &mut Problems, path: String, text: &str) {
    if let Err(e) = TagPattern::new(text) {
        p.push(path, e.to_string());
    }
}

/// `host:port`, after one of `schemes` when there are any.
fn check_listen(p: &mut Problems, path: String, listen: &str, schemes: &[&str]) {
    let rest = if schemes.is_empty() {
        if listen.contains("://") {
            return p.push(path, format!("{listen:?}: write host:port, no scheme"));
        }
        listen
    } else {
        match schemes.iter().find_map(|s| listen.strip_prefix(s)) {
            Some(rest) => rest,
            None => {
                let forms: Vec<String> = schemes.iter().map(|s| format!("{s}host:port")).collect();
                return p.push(path, format!("{listen:?}: write {}", forms.join(" or ")));
            }
        }
    };
    if rest.parse::<SocketAddr>().is_err() {
        p.push(
            path,
            format!("{listen:?}: {rest:?} is not an address and port such as 127.0.0.1:24224"),
        );
    }
}

fn check_input(p: &mut Problems, path: &str, input: &LogInput) {
    let set = [
        ("tag", input.tag.is_some()),
        ("selector", input.selector.is_some()),
        ("listen", input.listen.is_some()),
        ("path", input.path.is_some()),
        ("parser", input.parser.is_some()),
        ("pattern", input.pattern.is_some()),
        ("multiline", input.multiline.is_some()),
    ];
    let (kind, allowed): (&str, &[&str]) = match input.type_ {
        InputType::Tasks => (
            "tasks input",
            &["tag", "selector", "parser", "pattern", "multiline"],
        ),
        InputType::Forward => ("forward input", &["listen"]),
        InputType::Http => ("http input", &["listen"]),
        InputType::Tail => (
            "tail input",
            &["tag", "path", "parser", "pattern", "multiline"],
        ),
        InputType::Syslog => ("syslog input", &["tag", "listen"]),
    };
    only(p, path, kind, allowed, &set);
    match input.type_ {
        InputType::Tasks => {
            if let Some(tag) = &input.tag {
                if let Err(e) = TagTemplate::new(tag) {
                    p.push(format!("{path}.tag"), e.to_string());
                }
            }
            if let Some(s) = &input.selector {
                if let Some(service) = &s.service {
                    if let Err(why) = check_name(service, false) {
                        p.push(format!("{path}.selector.service"), why);
                    }
                }
                for (k, v) in &s.labels {
                    if let Err(why) = check_label_key(k).and_then(|()| check_label_value(v)) {
                        p.push(
                            crate::validate::join_key(&format!("{path}.selector.labels"), k),
                            why,
                        );
                    }
                }
            }
        }
        InputType::Forward | InputType::Http => {
            required(p, path, kind, "listen", &input.listen);
            if let Some(l) = input.listen.as_deref().filter(|l| !l.is_empty()) {
                check_listen(p, format!("{path}.listen"), l, &[]);
            }
        }
        InputType::Syslog => {
            required(p, path, kind, "listen", &input.listen);
            if let Some(l) = input.listen.as_deref().filter(|l| !l.is_empty()) {
                check_listen(p, format!("{path}.listen"), l, &["udp://", "tcp://"]);
            }
            literal_tag(p, path, &input.tag);
        }
        InputType::Tail => {
            required(p, path, kind, "path", &input.path);
            if let Some(file) = input.path.as_deref().filter(|f| !f.is_empty()) {
                let (dir, name) = file.rsplit_once('/').unwrap_or(("", file));
                if !file.starts_with('/') {
                    p.push(format!("{path}.path"), "must be an absolute path");
                } else if dir.contains(['*', '?']) || name.is_empty() {
                    p.push(
                        format!("{path}.path"),
                        "a glob may only be in the file name (/var/log/app/*.log)",
                    );
                }
            }
            literal_tag(p, path, &input.tag);
        }
    }
    match (input.parser, &input.pattern) {
        (Some(ParserType::Regex), None) => p.push(
            format!("{path}.pattern"),
            "the regex parser needs `pattern`, with a (?P<field>...) per field",
        ),
        (Some(ParserType::Regex), Some(text)) => {
            if let Some(re) = check_regex(p, format!("{path}.pattern"), text) {
                if re.capture_names().flatten().next().is_none() {
                    p.push(
                        format!("{path}.pattern"),
                        "names no capture: use (?P<field>...) for each field to keep",
                    );
                }
            }
        }
        (_, Some(_)) if allowed.contains(&"pattern") => p.push(
            format!("{path}.pattern"),
            "only the regex parser reads `pattern` (set parser: regex)",
        ),
        _ => {}
    }
    if let Some(m) = &input.multiline {
        check_regex(p, format!("{path}.multiline.start"), &m.start);
        if m.flush_timeout.0.is_zero() {
            p.push(
                format!("{path}.multiline.flushTimeout"),
                "must be more than 0",
            );
        }
    }
}

/// A tag written out in full: no pattern, no placeholder.
fn literal_tag(p: &mut Problems, path: &str, tag: &Option<String>) {
    let Some(tag) = tag else { return };
    let path = format!("{path}.tag");
    if tag.contains(['*', '{', '}', ',']) {
        p.push(
            path,
            format!("{tag:?}: a tag is plain parts joined by dots"),
        );
    } else {
        check_pattern(p, path, tag);
    }
}

fn check_filter(p: &mut Problems, path: &str, f: &LogFilter) {
    check_pattern(p, format!("{path}.match"), &f.match_);
    let set = [
        ("include", !f.include.is_empty()),
        ("exclude", !f.exclude.is_empty()),
        ("add", !f.add.is_empty()),
        ("remove", !f.remove.is_empty()),
        ("rename", !f.rename.is_empty()),
        ("nest", f.nest.is_some()),
        ("lift", f.lift.is_some()),
    ];
    let (kind, allowed): (&str, &[&str]) = match f.type_ {
        FilterType::Grep => ("grep filter", &["include", "exclude"]),
        FilterType::Modify => (
            "modify filter",
            &["add", "remove", "rename", "nest", "lift"],
        ),
    };
    only(p, path, kind, allowed, &set);
    if !set.iter().any(|(field, on)| *on && allowed.contains(field)) {
        p.push(
            path.to_string(),
            format!(
                "a {kind} does nothing without one of: {}",
                allowed.join(", ")
            ),
        );
    }
    for (which, fields) in [("include", &f.include), ("exclude", &f.exclude)] {
        for (field, re) in fields {
            let at = crate::validate::join_key(&format!("{path}.{which}"), field);
            check_regex(p, at, re);
        }
    }
    if let Some(n) = &f.nest {
        if n.under.is_empty() {
            p.push(format!("{path}.nest.under"), "required field is missing");
        }
        if n.keys.is_empty() {
            p.push(format!("{path}.nest.keys"), "name the keys to move");
        }
    }
}

fn check_output(p: &mut Problems, path: &str, o: &LogOutput, all: &[LogOutput]) {
    check_pattern(p, format!("{path}.match"), &o.match_);
    let set = [
        ("url", o.url.is_some()),
        ("path", o.path.is_some()),
        ("address", o.address.is_some()),
        ("format", o.format.is_some()),
        ("messageKey", o.message_key.is_some()),
        ("index", o.index.is_some()),
        ("labels", !o.labels.is_empty()),
        ("to", !o.to.is_empty()),
        ("buffer", o.buffer.is_some()),
        ("secondary", o.secondary.is_some()),
    ];
    const DELIVERY: [&str; 2] = ["buffer", "secondary"];
    let (kind, allowed): (&str, Vec<&str>) = match o.type_ {
        OutputType::Stdout => ("stdout output", vec!["format", "messageKey"]),
        OutputType::File => ("file output", vec!["path", "format", "messageKey"]),
        OutputType::Http => ("http output", vec!["url", "format", "messageKey"]),
        OutputType::Forward => ("forward output", vec!["address"]),
        OutputType::Loki => ("loki output", vec!["url", "labels", "messageKey"]),
        OutputType::Elasticsearch => ("elasticsearch output", vec!["url", "index"]),
        OutputType::Copy => ("copy output", vec!["to"]),
    };
    let allowed: Vec<&str> = if o.type_ == OutputType::Copy {
        allowed
    } else {
        allowed.into_iter().chain(DELIVERY).collect()
    };
    only(p, path, kind, &allowed, &set);
    match o.type_ {
        OutputType::File => {
            required(p, path, kind, "path", &o.path);
            if o.path
                .as_deref()
                .is_some_and(|f| !f.is_empty() && !f.starts_with('/'))
            {
                p.push(format!("{path}.path"), "must be an absolute path");
            }
        }
        OutputType::Http | OutputType::Loki | OutputType::Elasticsearch => {
            required(p, path, kind, "url", &o.url);
            if let Some(url) = o.url.as_deref().filter(|u| !u.is_empty()) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p.push(
                        format!("{path}.url"),
                        format!("{url:?}: use http:// or https://"),
                    );
                }
            }
        }
        OutputType::Forward => {
            required(p, path, kind, "address", &o.address);
            if let Some(a) = o.address.as_deref().filter(|a| !a.is_empty()) {
                let ok = a
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    p.push(
                        format!("{path}.address"),
                        format!("{a:?} is not host:port such as fluentd.example:24224"),
                    );
                }
            }
        }
        OutputType::Copy => {
            if o.to.is_empty() {
                p.push(
                    format!("{path}.to"),
                    "a copy output needs `to`: the outputs it sends to",
                );
            }
            for (j, name) in o.to.iter().enumerate() {
                let at = format!("{path}.to[{j}]");
                match all.iter().find(|x| &x.name == name) {
                    None => p.push(at, format!("no output is named {name:?}")),
                    Some(x) if x.type_ == OutputType::Copy => {
                        p.push(at, format!("{name:?} is a copy output itself"))
                    }
                    Some(_) => {}
                }
            }
        }
        OutputType::Stdout => {}
    }
    if o.message_key.is_some()
        && matches!(
            o.type_,
            OutputType::Stdout | OutputType::File | OutputType::Http
        )
        && o.format != Some(FormatType::SingleValue)
    {
        p.push(
            format!("{path}.messageKey"),
            "only the single_value format writes one field (set format: single_value)",
        );
    }
    if let Some(b) = &o.buffer {
        let at = format!("{path}.buffer");
        if b.chunk_limit.0 < 1024 {
            p.push(format!("{at}.chunkLimit"), "must be at least 1k");
        }
        if b.total_limit.0 < b.chunk_limit.0 {
            p.push(format!("{at}.totalLimit"), "must be at least chunkLimit");
        }
        if b.retry.max_attempts == 0 {
            p.push(format!("{at}.retry.maxAttempts"), "must be at least 1");
        }
        if b.retry.base.0.is_zero() {
            p.push(format!("{at}.retry.base"), "must be more than 0");
        }
        if b.retry.max_delay.0 < b.retry.base.0 {
            p.push(
                format!("{at}.retry.maxDelay"),
                "must be at least retry.base",
            );
        }
    }
    if let Some(s) = &o.secondary {
        if !s.path.starts_with('/') {
            p.push(format!("{path}.secondary.path"), "must be an absolute path");
        }
    }
}

#[cfg(test)]
#[path = "logpipeline_tests.rs"]
mod tests;
