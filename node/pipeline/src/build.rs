//! A LogPipeline's spec made real on one node: its outputs' buffers opened (what an
//! earlier run left is sent first), its sinks, filters and routes, and its inputs
//! bound and started. Starting fails as a whole, with the reason, when any part
//! cannot start (a port in use, a buffer directory that cannot be made), and leaves
//! nothing running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_api::{
    BufferType, FilterType, FormatType, InputType, LogFilter, LogInput, LogOutput, LogPipelineSpec,
    OutputType, OverflowPolicy, ParserType,
};
use shoal_logs::buffer::{FileBuffer, Limits};
use shoal_logs::filter::{Action, Filter, Modify, TagText};
use shoal_logs::format::Format;
use shoal_logs::parse::Parser;
use shoal_logs::retry::Policy;
use shoal_logs::route::Router;
use shoal_logs::tail::Tail;
use shoal_logs::TagPattern;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::output::{Output, Overflow};
use crate::running::{Happened, InputCounters, Running};
use crate::sinks::Sink;
use crate::syslog_in::SyslogIn;
use crate::tail_in::{Joining, Lines, TailIn};
use crate::tasks_in::{TaskLog, TasksIn};

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("{at}: {why}")]
    Part { at: String, why: String },
}

fn part(at: impl Into<String>, why: impl ToString) -> BuildError {
    BuildError::Part {
        at: at.into(),
        why: why.to_string(),
    }
}

/// Where a pipeline runs: its node, its directory (buffers, positions), shared
/// memory for memory buffers, and the node's tasks for a `tasks` input.
#[derive(Clone)]
pub struct Place {
    pub node: String,
    pub dir: PathBuf,
    pub memory_dir: PathBuf,
    pub tasks: watch::Receiver<Vec<TaskLog>>,
}

/// Lines longer than this are cut in pieces (Docker's json-file cuts at 16 KiB;
/// files written by hand get more room).
const MAX_LINE: usize = 256 << 10;
/// The largest forward message taken.
const MAX_FORWARD: usize = 64 << 20;
const POLL: Duration = Duration::from_millis(100);

/// Starts `spec` at `place`.
pub async fn start(
    name: &str,
    generation: i64,
    spec: &LogPipelineSpec,
    place: Place,
) -> Result<Running, BuildError> {
    let stop = CancellationToken::new();
    let mut found = Vec::new();
    let started = start_parts(spec, &place, stop.clone(), &mut found).await;
    match started {
        Ok((engine, inputs)) => Ok(Running::new(name, generation, engine, inputs, stop, found)),
        Err(e) => {
            stop.cancel();
            Err(e)
        }
    }
}

async fn start_parts(
    spec: &LogPipelineSpec,
    place: &Place,
    stop: CancellationToken,
    found: &mut Vec<Happened>,
) -> Result<(Arc<Engine>, Vec<InputCounters>), BuildError> {
    let mut outputs = Vec::new();
    let mut sinks = Vec::new();
    let mut index = BTreeMap::new();
    for o in spec.outputs.iter().filter(|o| o.type_ != OutputType::Copy) {
        index.insert(o.name.clone(), outputs.len());
        outputs.push(output(o, place, found)?);
        sinks.push(sink(o));
    }
    let mut patterns = Vec::new();
    let mut copies = Vec::new();
    for o in &spec.outputs {
        let at = format!("output {}", o.name);
        patterns.push(TagPattern::new(&o.match_).map_err(|e| part(&at, e))?);
        let to: Vec<usize> = if o.type_ == OutputType::Copy {
            o.to.iter().filter_map(|t| index.get(t).copied()).collect()
        } else {
            index.get(&o.name).copied().into_iter().collect()
        };
        copies.push(to);
    }
    let filters = spec
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| filter(f, &place.node).map_err(|why| part(format!("filter {i}"), why)))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = Arc::new(Engine::new(
        filters,
        Router::new(patterns, copies),
        outputs.clone(),
    ));
    let mut counters = Vec::new();
    for i in &spec.inputs {
        counters.push(input(i, place, &engine, stop.clone()).await?);
    }
    for (o, s) in outputs.into_iter().zip(sinks) {
        tokio::spawn(o.run(s, stop.clone()));
    }
    Ok((engine, counters))
}

fn output(
    o: &LogOutput,
    place: &Place,
    found: &mut Vec<Happened>,
) -> Result<Arc<Output>, BuildError> {
    let at = format!("output {}", o.name);
    let b = o.buffer.clone().unwrap_or_default();
    let root = match b.type_ {
        BufferType::File => &place.dir,
        BufferType::Memory => &place.memory_dir,
    };
    let dir = root.join("outputs").join(&o.name);
    std::fs::create_dir_all(&dir).map_err(|e| part(&at, format!("{}: {e}", dir.display())))?;
    let limits = Limits {
        chunk_bytes: b.chunk_limit.0,
        chunk_age: b.flush_interval.0,
        total_bytes: b.total_limit.0,
    };
    let (buffer, recovered) = FileBuffer::open(&dir, limits).map_err(|e| part(&at, e))?;
    if recovered.chunks > 0 || !recovered.quarantined.is_empty() {
        tracing::info!(output = %o.name, chunks = recovered.chunks, torn = recovered.torn_records,
            quarantined = recovered.quarantined.len(), "buffer recovered");
    }
    for q in &recovered.quarantined {
        tracing::warn!(output = %o.name, chunk = %q.display(), "a chunk failed its checksum: quarantined");
        found.push(Happened {
            warning: true,
            reason: "ChunkQuarantined",
            message: format!(
                "output {}: a buffer chunk failed its checksum and was moved to {}; the rest is sent",
                o.name,
                q.display()
            ),
        });
    }
    let dead_letter = o
        .secondary
        .as_ref()
        .map(|s| PathBuf::from(&s.path))
        .unwrap_or_else(|| place.dir.join("dead-letter").join(&o.name));
    Ok(Output::new(
        &o.name,
        buffer,
        match b.overflow {
            OverflowPolicy::Block => Overflow::Block,
            OverflowPolicy::DropOldest => Overflow::DropOldest,
        },
        Policy {
            max_attempts: b.retry.max_attempts,
            base: b.retry.base.0,
            max_delay: b.retry.max_delay.0,
        },
        b.flush_interval.0,
        dead_letter,
    ))
}

fn format(o: &LogOutput) -> Format {
    match o.format.unwrap_or(FormatType::Json) {
        FormatType::Json => Format::Json,
        FormatType::Ltsv => Format::Ltsv,
        FormatType::Msgpack => Format::Msgpack,
        FormatType::SingleValue => Format::SingleValue {
            key: o.message_key.clone().unwrap_or_else(|| "log".into()),
        },
    }
}

fn sink(o: &LogOutput) -> Sink {
    let url = o.url.clone().unwrap_or_default();
    match o.type_ {
        OutputType::Stdout | OutputType::Copy => Sink::Stdout { format: format(o) },
        OutputType::File => Sink::File {
            path: PathBuf::from(o.path.clone().unwrap_or_default()),
            format: format(o),
        },
        OutputType::Http => Sink::http(&url, format(o)),
        OutputType::Forward => Sink::forward(o.address.as_deref().unwrap_or_default()),
        OutputType::Loki => Sink::loki(&url, o.labels.clone(), o.message_key.clone()),
        OutputType::Elasticsearch => {
            Sink::elasticsearch(&url, o.index.as_deref().unwrap_or("shoal"))
        }
    }
}

fn filter(f: &LogFilter, node: &str) -> Result<Filter, String> {
    let pattern = TagPattern::new(&f.match_).map_err(|e| e.to_string())?;
    let regexes = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| Ok((k.clone(), regex::Regex::new(v).map_err(|e| e.to_string())?)))
            .collect::<Result<Vec<_>, String>>()
    };
    let action = match f.type_ {
        FilterType::Grep => Action::Grep {
            include: regexes(&f.include)?,
            exclude: regexes(&f.exclude)?,
        },
        FilterType::Modify => {
            // `{node}` is known now; a text naming the tag is filled per event.
            let (mut add, mut add_from_tag) = (Vec::new(), Vec::new());
            for (k, v) in &f.add {
                let v = match v {
                    serde_json::Value::String(s) => {
                        serde_json::Value::String(s.replace("{node}", node))
                    }
                    other => other.clone(),
                };
                match v.as_str().and_then(TagText::parse) {
                    Some(text) => add_from_tag.push((k.clone(), text)),
                    None => add.push((k.clone(), shoal_logs::parse::from_json(v))),
                }
            }
            Action::Modify(Modify {
                rename: f.rename.clone().into_iter().collect(),
                remove: f.remove.clone(),
                add,
                add_from_tag,
                nest: f.nest.as_ref().map(|n| (n.under.clone(), n.keys.clone())),
                lift: f.lift.clone(),
            })
        }
    };
    Ok(Filter { pattern, action })
}

fn parser(i: &LogInput) -> Result<Option<Parser>, String> {
    Ok(match i.parser {
        None => None,
        Some(ParserType::Json) => Some(Parser::Json),
        Some(ParserType::Logfmt) => Some(Parser::Logfmt),
        Some(ParserType::Syslog) => Some(Parser::Syslog),
        Some(ParserType::Regex) => Some(
            Parser::regex(i.pattern.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?,
        ),
    })
}

fn joining(i: &LogInput) -> Result<Option<Joining>, String> {
    i.multiline
        .as_ref()
        .map(|m| {
            Ok(Joining {
                start: regex::Regex::new(&m.start).map_err(|e| e.to_string())?,
                timeout: m.flush_timeout.0,
            })
        })
        .transpose()
}

async fn input(
    i: &LogInput,
    place: &Place,
    engine: &Arc<Engine>,
    stop: CancellationToken,
) -> Result<InputCounters, BuildError> {
    let at = format!("input {}", i.name);
    let counters = InputCounters::new(&i.name);
    let listen = i.listen.clone().unwrap_or_default();
    let bind = |e: std::io::Error| part(&at, format!("{listen}: {e}"));
    match i.type_ {
        InputType::Forward => {
            let listener = tokio::net::TcpListener::bind(&listen).await.map_err(bind)?;
            let heartbeats = tokio::net::UdpSocket::bind(&listen).await.map_err(bind)?;
            tokio::spawn(crate::forward_in::answer_heartbeats(
                heartbeats,
                stop.clone(),
            ));
            tokio::spawn(crate::forward_in::serve(
                listener,
                engine.clone(),
                MAX_FORWARD,
                counters.events.clone(),
                stop,
            ));
        }
        InputType::Http => {
            let listener = tokio::net::TcpListener::bind(&listen).await.map_err(bind)?;
            tokio::spawn(crate::http_in::serve(
                listener,
                engine.clone(),
                counters.events.clone(),
                stop,
            ));
        }
        InputType::Syslog => {
            let input = Arc::new(SyslogIn {
                tag: i.tag.clone().unwrap_or_else(|| "syslog".into()),
                engine: engine.clone(),
                unparsed: counters.unparsed.clone(),
                events: counters.events.clone(),
            });
            if let Some(addr) = listen.strip_prefix("udp://") {
                let socket = tokio::net::UdpSocket::bind(addr).await.map_err(bind)?;
                tokio::spawn(input.serve_udp(socket, stop));
            } else {
                let addr = listen.strip_prefix("tcp://").unwrap_or(&listen);
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
                tokio::spawn(input.serve_tcp(listener, stop));
            }
        }
        InputType::Tail => {
            let path = i.path.clone().unwrap_or_default();
            let positions = positions(&place.dir, &i.name).map_err(|e| part(&at, e))?;
            let tail =
                Tail::open(&path, &positions.join("tail"), MAX_LINE).map_err(|e| part(&at, e))?;
            let input = Arc::new(TailIn {
                tag: i.tag.clone().unwrap_or_else(|| format!("tail.{}", i.name)),
                lines: Lines::Text,
                parser: parser(i).map_err(|e| part(&at, e))?,
                joining: joining(i).map_err(|e| part(&at, e))?,
                engine: engine.clone(),
                poll: POLL,
                events: counters.events.clone(),
                unparsed: counters.unparsed.clone(),
            });
            tokio::spawn(input.run(tail, stop));
        }
        InputType::Tasks => {
            let input = TasksIn {
                node: place.node.clone(),
                template: shoal_api::tag::TagTemplate::new(
                    i.tag.as_deref().unwrap_or("task.{service}.{task}"),
                )
                .map_err(|e| part(&at, e))?,
                selector: i.selector.clone().unwrap_or_default(),
                parser: parser(i).map_err(|e| part(&at, e))?,
                joining: joining(i).map_err(|e| part(&at, e))?,
                positions: positions(&place.dir, &i.name).map_err(|e| part(&at, e))?,
                engine: engine.clone(),
                counters: counters.clone(),
            };
            tokio::spawn(input.run(place.tasks.clone(), stop));
        }
    }
    Ok(counters)
}

/// The input's directory of positions.
fn positions(dir: &Path, input: &str) -> Result<PathBuf, String> {
    let p = dir.join("positions").join(input);
    std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}
