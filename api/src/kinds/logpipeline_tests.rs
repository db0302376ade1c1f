//! LogPipelines as `shoal apply` reads them: each mistake one located error.

use crate::yaml::decode_manifests;

fn problems(spec: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: shoal.dev/v1\nkind: LogPipeline\nmetadata: {{name: ship}}\nspec:\n{spec}"
    );
    match decode_manifests("lp.yaml", &text) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_problem(spec: &str, path: &str, says: &str) {
    let all = problems(spec);
    assert!(
        all.iter().any(|e| e.contains(path) && e.contains(says)),
        "expected {path}: {says} in {all:?}"
    );
}

const DESIGN: &str = r#"  nodeSelector: {}
  inputs:
    - {name: apps, type: tasks, selector: {service: api}, tag: "task.{service}.{task}"}
    - {name: fwd, type: forward, listen: "127.0.0.1:24224"}
    - {name: web, type: http, listen: "127.0.0.1:9880"}
    - {name: files, type: tail, path: "/var/log/app/*.log", tag: file.app, parser: json}
    - {name: sys, type: syslog, listen: "udp://127.0.0.1:5140"}
  filters:
    - {match: "task.**", type: grep, include: {log: "ERROR|WARN"}}
    - {match: "**", type: modify, add: {cluster: prod}}
  outputs:
    - name: sink
      match: "task.{api,web}.**"
      type: http
      url: "http://127.0.0.1:8888/ingest"
      format: json
      buffer: {type: file, flushInterval: 1s, retry: {maxAttempts: 10, base: 1s}, overflow: block}
      secondary: {type: file, path: /var/lib/shoal/dead-letter}
    - {name: console, match: "**", type: stdout}
"#;

#[test]
fn the_design_documents_example_is_accepted() {
    assert_eq!(problems(DESIGN), Vec::<String>::new());
}

#[test]
fn a_pipeline_needs_an_input_and_an_output() {
    assert_problem("  inputs: []\n", "spec.inputs", "at least one input");
    assert_problem("  inputs: []\n", "spec.outputs", "at least one output");
}

#[test]
fn an_unknown_parser_or_type_names_its_field_and_line() {
    let spec = "  inputs:\n    - {name: f, type: tail, path: /x.log, parser: jsn}\n  outputs: [{name: o, type: stdout}]\n";
    assert_problem(spec, "spec.inputs[0].parser", "jsn");
    assert_problem(
        spec,
        "line 6: spec.inputs[0].parser",
        "expected one of json, logfmt, syslog, regex",
    );
    let spec = "  inputs: [{name: f, type: kafka}]\n  outputs: [{name: o, type: stdout}]\n";
    assert_problem(spec, "spec.inputs[0].type", "kafka");
}

#[test]
fn a_route_to_an_output_that_does_not_exist_is_refused() {
    let spec = "  inputs: [{name: f, type: forward, listen: \"127.0.0.1:1\"}]\n  outputs:\n    - {name: all, type: copy, to: [a, nowhere]}\n    - {name: a, type: stdout}\n";
    assert_problem(
        spec,
        "spec.outputs[0].to[1]",
        "no output is named \"nowhere\"",
    );
    assert!(!problems(spec).iter().any(|e| e.contains("to[0]")));
}

#[test]
fn a_bad_regex_or_tag_pattern_names_its_field() {
    let spec = "  inputs: [{name: f, type: forward, listen: \"127.0.0.1:1\"}]\n  filters:\n    - {match: \"a..b\", type: grep, include: {log: \"(unclosed\"}}\n  outputs: [{name: o, match: \"{a,b\", type: stdout}]\n";
    assert_problem(spec, "spec.filters[0].match", "a..b");
    assert_problem(
        spec,
        "spec.filters[0].include.log",
        "not a regular expression",
    );
    assert_problem(spec, "spec.outputs[0].match", "never closed");
    let spec = "  inputs: [{name: f, type: tail, path: /x.log, parser: regex, pattern: \"\\\\d+\"}]\n  outputs: [{name: o, type: stdout}]\n";
    assert_problem(spec, "spec.inputs[0].pattern", "names no capture");
    let spec = "  inputs: [{name: a, type: tasks, tag: \"task.{pod}\"}]\n  outputs: [{name: o, type: stdout}]\n";
    assert_problem(spec, "spec.inputs[0].tag", "unknown placeholder {pod}");
}

#[test]
fn a_field_its_type_would_ignore_is_refused() {
    let spec = "  inputs: [{name: f, type: tail, path: /x.log, listen: \"127.0.0.1:1\"}]\n  outputs: [{name: o, type: stdout, url: \"http://x\"}]\n";
    assert_problem(spec, "spec.inputs[0].listen", "not a field of a tail input");
    assert_problem(
        spec,
        "spec.outputs[0].url",
        "not a field of a stdout output",
    );
    let spec = "  inputs: [{name: f, type: forward, listen: \"127.0.0.1:1\"}]\n  filters: [{type: grep, add: {a: b}}]\n  outputs: [{name: o, type: stdout, messageKey: log}]\n";
    assert_problem(spec, "spec.filters[0].add", "not a field of a grep filter");
    assert_problem(spec, "spec.filters[0]", "does nothing");
    assert_problem(spec, "spec.outputs[0].messageKey", "single_value");
}

#[test]
fn listen_addresses_and_required_fields_are_checked() {
    let spec = "  inputs:\n    - {name: a, type: forward, listen: \"tcp://127.0.0.1:1\"}\n    - {name: b, type: syslog, listen: \"127.0.0.1:514\"}\n    - {name: c, type: http}\n    - {name: d, type: http, listen: \"127.0.0.1:9\"}\n    - {name: d, type: forward, listen: \"127.0.0.1:9\"}\n  outputs: [{name: o, type: http}]\n";
    assert_problem(spec, "spec.inputs[0].listen", "no scheme");
    assert_problem(
        spec,
        "spec.inputs[1].listen",
        "udp://host:port or tcp://host:port",
    );
    assert_problem(spec, "spec.inputs[2].listen", "needs `listen`");
    assert_problem(spec, "spec.inputs[4].listen", "already an earlier input's");
    assert_problem(spec, "spec.inputs[4].name", "already named \"d\"");
    assert_problem(spec, "spec.outputs[0].url", "needs `url`");
}

#[test]
fn buffers_and_retries_must_be_able_to_work() {
    let spec = "  inputs: [{name: f, type: forward, listen: \"127.0.0.1:1\"}]\n  outputs:\n    - {name: o, type: http, url: \"http://127.0.0.1:1/\", buffer: {chunkLimit: 16m, totalLimit: 1m, retry: {maxAttempts: 0}, overflow: spill}}\n";
    assert_problem(spec, "spec.outputs[0].buffer.overflow", "spill");
    let spec = spec.replace(", overflow: spill", "");
    assert_problem(
        &spec,
        "spec.outputs[0].buffer.totalLimit",
        "at least chunkLimit",
    );
    assert_problem(
        &spec,
        "spec.outputs[0].buffer.retry.maxAttempts",
        "at least 1",
    );
}
