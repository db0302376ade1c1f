//! Printing objects: YAML, JSON, tables and names, and errors.

use chrono::Utc;
use serde_json::Value;
use shoal_api::DynamicObject;

use crate::Format;

/// One line per problem, each prefixed `error:`, on stderr.
pub fn print_error(e: &anyhow::Error) {
    let text = match e.downcast_ref::<tonic::Status>() {
        Some(status) => status_text(status),
        None => shoal_api::join_causes(e.chain().map(|c| c.to_string())),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("error: {line}");
    }
}

fn status_text(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unavailable => format!("the shoal server is unavailable: {}", s.message()),
        _ => s.message().to_string(),
    }
}

pub fn parse_object(json: &str) -> anyhow::Result<DynamicObject> {
    serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("the server sent an unreadable object: {e}"))
}

pub fn lower_kind(obj: &DynamicObject) -> String {
    obj.kind.to_ascii_lowercase()
}

pub fn name_of(obj: &DynamicObject) -> String {
    format!("{}/{}", lower_kind(obj), obj.metadata.name)
}

pub fn to_yaml(v: &impl serde::Serialize) -> anyhow::Result<String> {
    shoal_api::yaml::to_yaml(v).map_err(anyhow::Error::msg)
}

/// Prints a list in `format` (a table when None).
pub fn print_list(
    kind: &str,
    items: &[DynamicObject],
    format: Option<Format>,
) -> anyhow::Result<()> {
    match format {
        Some(Format::Json) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "items": items }))?
        ),
        Some(Format::Yaml) => print!("{}", to_yaml(&serde_json::json!({ "items": items }))?),
        Some(Format::Name) => items.iter().for_each(|o| println!("{}", name_of(o))),
        Some(Format::Wide) | None => {
            let table = Table::for_kind(kind, format == Some(Format::Wide));
            if items.is_empty() {
                eprintln!("No {} found.", kind_plural(kind));
            } else {
                table.print(items);
            }
        }
    }
    Ok(())
}

pub fn print_one(obj: &DynamicObject, format: Option<Format>) -> anyhow::Result<()> {
    match format {
        Some(Format::Json) => println!("{}", serde_json::to_string_pretty(obj)?),
        Some(Format::Yaml) => print!("{}", to_yaml(obj)?),
        Some(Format::Name) => println!("{}", name_of(obj)),
        Some(Format::Wide) | None => Table::for_kind(&obj.kind, format == Some(Format::Wide))
            .print(std::slice::from_ref(obj)),
    }
    Ok(())
}

fn kind_plural(kind: &str) -> &'static str {
    shoal_api::kind_by_name(kind).map_or("objects", |d| d.plural)
}

/// How long ago `ts` (RFC 3339) was, kubectl-style: `45s`, `12m`, `3h`, `2d`.
pub fn age(ts: Option<&str>) -> String {
    let Some(ts) = ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let secs = (Utc::now() - ts.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

type Column = (&'static str, fn(&DynamicObject, &Value) -> String);

/// A kind's table: columns read from the object's JSON.
pub struct Table {
    columns: Vec<Column>,
}

fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn or_dash(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn created(o: &DynamicObject, _: &Value) -> String {
    age(o
        .metadata
        .creation_timestamp
        .map(|t| t.to_rfc3339())
        .as_deref())
}

fn labels(o: &DynamicObject, _: &Value) -> String {
    or_dash(
        o.metadata
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The `field` of the object's condition `type_`, if it has one.
fn condition_field<'a>(v: &'a Value, type_: &str, field: &str) -> Option<&'a str> {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        })
        .and_then(|c| c.get(field).and_then(Value::as_str))
}

/// A number summed over a LogPipeline's node entries (whole when it is).
fn per_node_sum(v: &Value, field: &str) -> String {
    let sum: f64 = v
        .pointer("/status/nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.get(field).and_then(Value::as_f64))
        .sum();
    if sum.fract() == 0.0 {
        format!("{sum:.0}")
    } else {
        format!("{sum:.1}")
    }
}

fn condition(v: &Value, type_: &str) -> String {
    condition_field(v, type_, "status")
        .unwrap_or("Unknown")
        .to_string()
}

impl Table {
    pub fn for_kind(kind: &str, wide: bool) -> Table {
        let kind = shoal_api::kind_by_name(kind).map_or(kind, |d| d.kind);
        let name: Column = ("NAME", |o, _| o.metadata.name.clone());
        let age_col: Column = ("AGE", created);
        let mut columns: Vec<Column> = match kind {
            "Service" => vec![
                name,
                ("MODE", |_, v| {
                    let m = s(v, &["spec", "mode"]);
                    if m.is_empty() {
                        "replicated".into()
                    } else {
                        m
                    }
                }),
                ("REPLICAS", |_, v| {
                    // Jobs count completions; everything else, running tasks.
                    let done = if s(v, &["spec", "mode"]) == "job" {
                        "succeeded"
                    } else {
                        "runningReplicas"
                    };
                    format!(
                        "{}/{}",
                        or_zero(s(v, &["status", done])),
                        or_zero(s(v, &["status", "replicas"]))
                    )
                }),
                ("IMAGE", |_, v| s(v, &["spec", "image"])),
                age_col,
            ],
            "Task" => vec![
                name,
                ("IMAGE", |_, v| s(v, &["spec", "image"])),
                ("NODE", |_, v| or_dash(s(v, &["spec", "node"]))),
                // As `docker service ps` shows DESIRED STATE: a task being stopped
                // says so until its node reports it gone.
                ("DESIRED", |_, v| {
                    let desired = s(v, &["spec", "desiredState"]);
                    if desired.is_empty() {
                        "running".into()
                    } else {
                        desired
                    }
                }),
                ("STATE", |_, v| {
                    let st = s(v, &["status", "state"]);
                    if st.is_empty() {
                        "pending".into()
                    } else {
                        st
                    }
                }),
                age_col,
            ],
            "Network" => vec![
                name,
                ("DRIVER", |_, v| s(v, &["spec", "driver"])),
                // What was allocated; the manifest's until then.
                ("SUBNET", |_, v| {
                    let allocated = s(v, &["status", "subnet"]);
                    or_dash(if allocated.is_empty() {
                        s(v, &["spec", "subnet"])
                    } else {
                        allocated
                    })
                }),
                ("GATEWAY", |_, v| or_dash(s(v, &["status", "gateway"]))),
                ("VNI", |_, v| or_dash(s(v, &["status", "vni"]))),
                ("IN USE", |_, v| {
                    format!(
                        "{}/{}",
                        or_zero(s(v, &["status", "addressesInUse"])),
                        or_zero(s(v, &["status", "addressesTotal"]))
                    )
                }),
                ("READY", |_, v| condition(v, "Ready")),
                age_col,
            ],
            "LogPipeline" => vec![
                name,
                // Nodes running it, of those that reported.
                ("NODES", |_, v| {
                    let nodes = v.pointer("/status/nodes").and_then(Value::as_array);
                    let running = nodes
                        .into_iter()
                        .flatten()
                        .filter(|n| n["state"] == "Running");
                    format!("{}/{}", running.count(), nodes.map_or(0, Vec::len))
                }),
                ("IN/S", |_, v| per_node_sum(v, "inPerSecond")),
                ("OUT/S", |_, v| per_node_sum(v, "outPerSecond")),
                ("BUFFERED", |_, v| {
                    shoal_api::ByteSize(per_node_sum(v, "bufferedBytes").parse().unwrap_or(0))
                        .to_string()
                }),
                ("DROPPED", |_, v| per_node_sum(v, "dropped")),
                ("SET ASIDE", |_, v| per_node_sum(v, "setAside")),
                ("READY", |_, v| condition(v, "Ready")),
                age_col,
            ],
            "Secret" | "Config" => vec![
                name,
                ("DIGEST", |_, v| {
                    // Its first 12 hex digits, as docker shows ids.
                    let d = s(v, &["status", "digest"]);
                    let hex = d.rsplit(':').next().unwrap_or_default();
                    hex.get(..12).unwrap_or(hex).to_string()
                }),
                ("SIZE", |_, v| s(v, &["status", "size"])),
                age_col,
            ],
            "Node" => vec![
                name,
                ("STATE", |_, v| or_dash(s(v, &["status", "state"]))),
                ("AVAILABILITY", |_, v| s(v, &["spec", "availability"])),
                ("ROLE", |_, v| s(v, &["spec", "role"])),
                age_col,
            ],
            "GitSync" => vec![
                name,
                ("URL", |_, v| s(v, &["spec", "url"])),
                ("REF", |_, v| s(v, &["spec", "ref"])),
                ("READY", |_, v| condition(v, "Ready")),
                ("SUSPENDED", |_, v| {
                    let yes = v.pointer("/spec/suspend").and_then(Value::as_bool);
                    yes.unwrap_or(false).to_string()
                }),
                ("REVISION", |_, v| {
                    or_dash(
                        s(v, &["status", "lastAppliedRevision"])
                            .chars()
                            .take(12)
                            .collect(),
                    )
                }),
                age_col,
            ],
            "Event" => vec![
                ("LAST SEEN", |_, v| {
                    age(v.get("lastTimestamp").and_then(Value::as_str))
                }),
                ("TYPE", |_, v| s(v, &["type"])),
                ("REASON", |_, v| s(v, &["reason"])),
                ("OBJECT", |_, v| {
                    format!(
                        "{}/{}",
                        s(v, &["involvedObject", "kind"]).to_ascii_lowercase(),
                        s(v, &["involvedObject", "name"])
                    )
                }),
                ("MESSAGE", |_, v| {
                    let count = v.get("count").and_then(Value::as_u64).unwrap_or(1);
                    let msg = s(v, &["message"]);
                    if count > 1 {
                        format!("{msg} (x{count})")
                    } else {
                        msg
                    }
                }),
            ],
            _ => vec![name, age_col],
        };
        if wide {
            match kind {
                "Service" => columns.push(("COMMAND", |_, v| {
                    shell_words(v["spec"]["command"].as_array().into_iter().flatten())
                })),
                "Task" => {
                    columns.push(("MESSAGE", |_, v| s(v, &["status", "message"])));
                    columns.push(("CONTAINER", |_, v| {
                        s(v, &["status", "containerId"]).chars().take(12).collect()
                    }));
                }
                "Node" => columns.push(("ADDRESS", |_, v| or_dash(s(v, &["status", "address"])))),
                "LogPipeline" => columns.push(("MESSAGE", |_, v| {
                    condition_field(v, "Ready", "message").unwrap_or("").into()
                })),
                "GitSync" => columns.push(("MESSAGE", |_, v| {
                    let message = condition_field(v, "Ready", "message");
                    message.and_then(|m| m.lines().next()).unwrap_or("").into()
                })),
                "Event" => columns.push(("FROM", |_, v| s(v, &["source"]))),
                _ => {}
            }
            if kind != "Event" {
                columns.push(("LABELS", labels));
            }
        }
        Table { columns }
    }

    pub fn header(&self) -> Vec<String> {
        self.columns.iter().map(|(h, _)| h.to_string()).collect()
    }

    pub fn row(&self, obj: &DynamicObject) -> Vec<String> {
        let v = serde_json::to_value(obj).unwrap_or(Value::Null);
        self.columns.iter().map(|(_, f)| f(obj, &v)).collect()
    }

    pub fn print(&self, items: &[DynamicObject]) {
        let mut rows = vec![self.header()];
        rows.extend(items.iter().map(|o| self.row(o)));
        print_rows(&rows);
    }
}

fn or_zero(v: String) -> String {
    if v.is_empty() {
        "0".into()
    } else {
        v
    }
}

/// Prints rows as aligned columns, three spaces apart; the last column is not padded.
pub fn print_rows(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        println!("{}", format_row(r, &widths));
    }
}

pub fn format_row(r: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in r.iter().enumerate() {
        if i + 1 == r.len() {
            line.push_str(cell);
        } else {
            // Padded by hand: `{:<w$}` panics past a width of 65,535 (a stored value may
            // be that long).
            let w = widths.get(i).copied().unwrap_or(0);
            line.push_str(cell);
            line.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()) + 3,
            ));
        }
    }
    line.trim_end().to_string()
}

/// A command as a shell would show it: words joined by spaces, a word quoted when a
/// shell would read it otherwise (`sh -c 'echo hi'`), as `docker ps` shows COMMAND.
pub fn shell_words<'a>(words: impl IntoIterator<Item = &'a Value>) -> String {
    words
        .into_iter()
        .map(|w| shell_quote(&w.as_str().map_or_else(|| w.to_string(), str::to_string)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_however_long_a_value_is() {
        let long = "x".repeat(70_000);
        let rows = [
            vec!["NAME".to_string(), "IMAGE".to_string(), "AGE".to_string()],
            vec!["web".to_string(), long.clone(), "1m".to_string()],
        ];
        let widths = [4, 70_000];
        assert_eq!(
            format_row(&rows[0], &widths),
            format!("NAME   IMAGE{}   AGE", " ".repeat(69_995))
        );
        assert_eq!(format_row(&rows[1], &widths), format!("web    {long}   1m"));
    }

    #[test]
    fn commands_read_as_a_shell_would_show_them() {
        let words =
            |ws: &[&str]| shell_words(&ws.iter().map(|w| Value::from(*w)).collect::<Vec<_>>());
        assert_eq!(words(&["httpd", "-f", "-p", "8080"]), "httpd -f -p 8080");
        assert_eq!(
            words(&["sh", "-c", "echo it's $HOME"]),
            r#"sh -c 'echo it'\''s $HOME'"#
        );
        assert_eq!(words(&["printf", ""]), "printf ''");
    }
}
