//! Where an output delivers a chunk: an HTTP endpoint (NDJSON, or another format),
//! a file, or standard output. A sink says whether a failure may pass (try again)
//! or will not (a 4xx: the chunk goes to the secondary output or dead letter).

use std::path::PathBuf;

use shoal_logs::format::Format;
use shoal_logs::Event;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    pub why: String,
    /// Worth trying again (a connection refused, a 5xx, a 429).
    pub retry: bool,
}

pub enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        format: Format,
    },
    File {
        path: PathBuf,
        format: Format,
    },
    Stdout {
        format: Format,
    },
    /// Loki's push API: one stream per label set.
    Loki {
        client: reqwest::Client,
        url: String,
        labels: Vec<String>,
        line_key: Option<String>,
    },
    /// Elasticsearch's `_bulk` API: items it answers 429 or 5xx for are sent again
    /// (only those), items it refuses for good are handed back to be set aside.
    Elasticsearch {
        client: reqwest::Client,
        url: String,
        index: String,
    },
    /// Fluentd's forward protocol to Fluentd, Fluent Bit or another shoal: one
    /// connection kept open, PackedForward per tag, each acknowledged before the
    /// next (a chunk counts as delivered only once every part was acked).
    Forward {
        addr: String,
        conn: tokio::sync::Mutex<Option<tokio::net::TcpStream>>,
        ack_timeout: std::time::Duration,
    },
}

impl Sink {
    fn client() -> reqwest::Client {
        // ring, the provider image pulls and git already use (once per process).
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    pub fn http(url: &str, format: Format) -> Sink {
        Sink::Http {
            client: Self::client(),
            url: url.to_string(),
            format,
        }
    }

    pub fn loki(url: &str, labels: Vec<String>, line_key: Option<String>) -> Sink {
        Sink::Loki {
            client: Self::client(),
            url: url.to_string(),
            labels,
            line_key,
        }
    }

    pub fn elasticsearch(url: &str, index: &str) -> Sink {
        Sink::Elasticsearch {
            client: Self::client(),
            url: url.to_string(),
            index: index.to_string(),
        }
    }

    pub fn forward(addr: &str) -> Sink {
        Sink::Forward {
            addr: addr.to_string(),
            conn: tokio::sync::Mutex::new(None),
            ack_timeout: std::time::Duration::from_secs(30),
        }
    }

    fn body(format: &Format, events: &[Event]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            format.write(e, &mut out);
        }
        out
    }

    /// Whether it sends a chunk's records as they are on disk ([`Sink::send_records`]).
    pub fn takes_records(&self) -> bool {
        matches!(self, Sink::Forward { .. })
    }

    /// Delivers a buffer chunk's records ([`shoal_logs::buffer::bodies`]) without
    /// decoding them (a forward sink).
    pub async fn send_records(&self, records: &[&[u8]]) -> Result<(), SinkError> {
        let Sink::Forward {
            addr,
            conn,
            ack_timeout,
        } = self
        else {
            return Err(SinkError {
                why: "this output sends decoded events".into(),
                retry: false,
            });
        };
        let mut conn = conn.lock().await;
        let result = forward_records(addr, &mut conn, records, *ack_timeout).await;
        if result.is_err() {
            *conn = None;
        }
        result.map_err(|why| SinkError {
            why: format!("{addr}: {why}"),
            retry: true,
        })
    }

    /// Delivers `events`; Ok with the ones the receiver refused for good (by index,
    /// with its reason), which the output sets aside.
    pub async fn send(&self, events: &[Event]) -> Result<Vec<(usize, String)>, SinkError> {
        match self {
            Sink::Http {
                client,
                url,
                format,
            } => {
                let content_type = match format {
                    Format::Json => "application/x-ndjson",
                    Format::Msgpack => "application/msgpack",
                    _ => "text/plain",
                };
                post(client, url, content_type, Self::body(format, events)).await?;
                Ok(Vec::new())
            }
            Sink::Loki {
                client,
                url,
                labels,
                line_key,
            } => {
                let body = shoal_logs::sink::loki_body(events, labels, line_key.as_deref());
                post(client, url, "application/json", body).await?;
                Ok(Vec::new())
            }
            Sink::Elasticsearch { client, url, index } => {
                elasticsearch(client, url, index, events).await
            }
            Sink::File { path, format } => {
                use tokio::io::AsyncWriteExt;
                let fail = |e: std::io::Error| SinkError {
                    why: format!("{}: {e}", path.display()),
                    retry: true,
                };
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(fail)?;
                f.write_all(&Self::body(format, events))
                    .await
                    .map_err(fail)?;
                f.sync_data().await.map_err(fail)?;
                Ok(Vec::new())
            }
            Sink::Forward {
                addr,
                conn,
                ack_timeout,
            } => {
                let mut conn = conn.lock().await;
                let result = forward(addr, &mut conn, events, *ack_timeout).await;
                if result.is_err() {
                    // Whatever state the connection is in, the next try starts afresh.
                    *conn = None;
                }
                result.map_err(|why| SinkError {
                    why: format!("{addr}: {why}"),
                    retry: true,
                })?;
                Ok(Vec::new())
            }
            Sink::Stdout { format } => {
                use std::io::Write;
                let body = Self::body(format, events);
                // A closed stdout is a failure to report, not a panic.
                std::io::stdout()
                    .lock()
                    .write_all(&body)
                    .map_err(|e| SinkError {
                        why: format!("stdout: {e}"),
                        retry: true,
                    })?;
                Ok(Vec::new())
            }
        }
    }
}

/// POSTs `body`; a 2xx is delivered, a 429 or 5xx (or no answer) passes, the rest
/// will not.
async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, SinkError> {
    let answer = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| SinkError {
            why: format!("{url}: {e}"),
            retry: true,
        })?;
    let status = answer.status();
    if status.is_success() {
        let body = answer.bytes().await.map_err(|e| SinkError {
            why: format!("{url}: reading the answer: {e}"),
            retry: true,
        })?;
        return Ok(body.to_vec());
    }
    Err(SinkError {
        why: format!("{url}: {status}"),
        retry: status.is_server_error() || status.as_u16() == 429,
    })
}

/// Tries of the items Elasticsearch asks to have again, within one send.
const BULK_TRIES: u32 = 3;

async fn elasticsearch(
    client: &reqwest::Client,
    url: &str,
    index: &str,
    events: &[Event],
) -> Result<Vec<(usize, String)>, SinkError> {
    let mut pending: Vec<usize> = (0..events.len()).collect();
    let mut rejected = Vec::new();
    for attempt in 1..=BULK_TRIES {
        let batch: Vec<Event> = pending.iter().map(|i| events[*i].clone()).collect();
        let body = shoal_logs::sink::bulk_body(&batch, index);
        let answer = post(client, url, "application/x-ndjson", body).await?;
        let outcome = shoal_logs::sink::bulk_outcome(&answer, batch.len());
        rejected.extend(
            outcome
                .rejected
                .iter()
                .map(|(i, why)| (pending[*i], why.clone())),
        );
        pending = outcome.retry.iter().map(|i| pending[*i]).collect();
        if pending.is_empty() {
            return Ok(rejected);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
    }
    Err(SinkError {
        why: format!(
            "{url}: {} items still refused for now (429 or 5xx)",
            pending.len()
        ),
        retry: true,
    })
}

/// Sends `events` over `conn` (connecting first if needed), one PackedForward per run
/// of one tag, waiting for each ack.
async fn forward(
    addr: &str,
    conn: &mut Option<tokio::net::TcpStream>,
    events: &[Event],
    ack_timeout: std::time::Duration,
) -> Result<(), String> {
    use shoal_logs::forward::{encode_events, Mode};
    for run in events.chunk_by(|a, b| a.tag == b.tag) {
        let chunk = chunk_id();
        let message = encode_events(&run[0].tag, run, Mode::PackedForward, Some(&chunk));
        send_acked(addr, conn, &message, &chunk, ack_timeout).await?;
    }
    Ok(())
}

/// Sends a buffer chunk's records as they are on disk, one PackedForward per run of
/// one tag, waiting for each ack: nothing is decoded on the way.
async fn forward_records(
    addr: &str,
    conn: &mut Option<tokio::net::TcpStream>,
    records: &[&[u8]],
    ack_timeout: std::time::Duration,
) -> Result<(), String> {
    for (chunk, message, _) in shoal_logs::forward::packed_from_records(records, chunk_id) {
        send_acked(addr, conn, &message, &chunk, ack_timeout).await?;
    }
    Ok(())
}

/// Writes one message over `conn` (connecting first if needed) and waits for the
/// ack of `chunk`.
async fn send_acked(
    addr: &str,
    conn: &mut Option<tokio::net::TcpStream>,
    message: &[u8],
    chunk: &str,
    ack_timeout: std::time::Duration,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if conn.is_none() {
        *conn = Some(
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let Some(stream) = conn.as_mut() else {
        return Err("not connected".into());
    };
    stream.write_all(message).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    let acked = tokio::time::timeout(ack_timeout, async {
        loop {
            if let Some(len) =
                shoal_logs::frame::value_len(&answer, 4096).map_err(|e| e.to_string())?
            {
                let v = rmpv::decode::read_value(&mut &answer[..len]).map_err(|e| e.to_string())?;
                let ack = match &v {
                    rmpv::Value::Map(p) => p
                        .iter()
                        .find(|(k, _)| k.as_str() == Some("ack"))
                        .and_then(|(_, v)| v.as_str()),
                    _ => None,
                };
                return if ack == Some(chunk) {
                    Ok(())
                } else {
                    Err(format!("answered {v}, not the ack of {chunk}"))
                };
            }
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before acknowledging".to_string());
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .map_err(|_| format!("no ack within {ack_timeout:?}"))?;
    acked
}

/// A chunk id: 16 random bytes, base64 as Fluentd's are.
fn chunk_id() -> String {
    let random = shoal_logs::retry::random_u64;
    let bytes: Vec<u8> = [random(), random()]
        .iter()
        .flat_map(|r| r.to_be_bytes())
        .collect();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n =
            group.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - group.len()));
        for i in 0..=group.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}
