//! A stand-in for a node where no real node can show the fault: a plain TCP listener on
//! 127.0.0.1 that speaks just enough HTTP/1.1 to answer `GET /health` (so the coordinator
//! routes to it) and records every request it sees — and, as a hung node, never answers a
//! `POST`, noting when the coordinator closes such a connection.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the fake answers a `POST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPost {
    /// Reads it and never answers (a node whose model hangs).
    Hang,
    /// Answers 200 with an empty ranking.
    Answer,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Debug, Default)]
struct Record {
    seen: Vec<Seen>,
    hung: usize,
    hung_closed: usize,
}

/// A running fake node; it stops with the test's runtime.
#[derive(Clone)]
pub struct FakeNode {
    pub port: u16,
    pub url: String,
    record: Arc<Mutex<Record>>,
}

impl FakeNode {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start(on_post: OnPost) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = record.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, on_post, shared.clone()));
            }
        });
        Self {
            port,
            url: format!("http://127.0.0.1:{port}"),
            record,
        }
    }

    /// The coordinator's id for this node.
    pub fn id(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.record
            .lock()
            .map(|r| r.seen.clone())
            .unwrap_or_default()
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    /// POSTs left unanswered, and how many of their connections the peer has closed.
    pub fn hung(&self) -> (usize, usize) {
        self.record
            .lock()
            .map(|r| (r.hung, r.hung_closed))
            .unwrap_or_default()
    }
}

/// Reads one request head (and its body, by `content-length`); `None` at end of stream.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let authorization = header("authorization");
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    buffer.drain(..head_end + length);
    Some(Seen {
        method,
        path,
        authorization,
    })
}

async fn answer(stream: &mut TcpStream, status: &str, body: &str) -> bool {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.is_ok()
}

async fn serve(mut stream: TcpStream, on_post: OnPost, record: Arc<Mutex<Record>>) {
    let mut buffer = Vec::new();
    while let Some(seen) = read_request(&mut stream, &mut buffer).await {
        let (method, path) = (seen.method.clone(), seen.path.clone());
        if let Ok(mut r) = record.lock() {
            r.seen.push(seen);
        }
        let answered = match (method.as_str(), path.as_str(), on_post) {
            ("GET", "/health", _) => answer(&mut stream, "200 OK", r#"{"status":"ok"}"#).await,
            ("GET", _, _) => answer(&mut stream, "200 OK", "{}").await,
            (_, _, OnPost::Answer) => answer(&mut stream, "200 OK", "[]").await,
            (_, _, OnPost::Hang) => {
                if let Ok(mut r) = record.lock() {
                    r.hung += 1;
                }
                // Never answer; wait for the peer to give up (bounded, so the test ends).
                let mut sink = [0u8; 1024];
                let closed = tokio::time::timeout(Duration::from_secs(120), async {
                    loop {
                        match stream.read(&mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .is_ok();
                if closed {
                    if let Ok(mut r) = record.lock() {
                        r.hung_closed += 1;
                    }
                }
                false
            }
        };
        if !answered {
            return;
        }
    }
}
