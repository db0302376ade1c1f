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
}

impl Sink {
    pub fn http(url: &str, format: Format) -> Sink {
        // ring, the provider image pulls and git already use (once per process).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Sink::Http {
            client: reqwest::Client::new(),
            url: url.to_string(),
            format,
        }
    }

    fn body(format: &Format, events: &[Event]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            format.write(e, &mut out);
        }
        out
    }

    pub async fn send(&self, events: &[Event]) -> Result<(), SinkError> {
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
                let answer = client
                    .post(url)
                    .header("content-type", content_type)
                    .body(Self::body(format, events))
                    .send()
                    .await
                    .map_err(|e| SinkError {
                        why: format!("{url}: {e}"),
                        retry: true,
                    })?;
                let status = answer.status();
                if status.is_success() {
                    return Ok(());
                }
                Err(SinkError {
                    why: format!("{url}: {status}"),
                    retry: status.is_server_error() || status.as_u16() == 429,
                })
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
                f.sync_data().await.map_err(fail)
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
                    })
            }
        }
    }
}
