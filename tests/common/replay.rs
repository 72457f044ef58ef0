//! A replay of Azure: an HTTP server on a loopback port 0 that answers stage's ARM requests
//! with the bodies Azure really sent (`tests/fixtures/recordings`), chosen by a test's own
//! function from the request and what came before. Not the emulator: nothing here is
//! modelled, the bytes are Azure's, with only the names a request chose put in.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Without the query.
    pub path: String,
    pub query: String,
    pub body: String,
}

impl Request {
    /// Whether this is `method` on `path`, compared as ARM compares paths (ignoring case).
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path.eq_ignore_ascii_case(path)
    }
    pub fn under(&self, method: &str, prefix: &str) -> bool {
        self.method == method
            && self
                .path
                .to_ascii_lowercase()
                .starts_with(&prefix.to_ascii_lowercase())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Empty for none, as Azure's archive POST and monitor GETs answer.
    pub body: String,
}

impl Answer {
    pub fn json(status: u16, body: &serde_json::Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
    pub fn empty(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A recorded body, parsed.
pub fn recording(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/recordings/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

type Handler = dyn FnMut(&Request, &str) -> Option<Answer> + Send;

pub struct Replay {
    pub port: u16,
    /// Every request served, in order.
    pub log: Arc<Mutex<Vec<Request>>>,
    /// Requests the test's function had no answer for (answered 404 `NoRecording`).
    pub unanswered: Arc<Mutex<Vec<Request>>>,
}

impl Replay {
    /// Serves until dropped (the listener thread ends with the process). `answer` gets the
    /// request and this server's base URL (`http://127.0.0.1:PORT`).
    pub fn start(answer: impl FnMut(&Request, &str) -> Option<Answer> + Send + 'static) -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let log = Arc::new(Mutex::new(Vec::new()));
        let unanswered = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Mutex<Box<Handler>>> = Arc::new(Mutex::new(Box::new(answer)));
        let (l, u) = (log.clone(), unanswered.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (l, u, a, base) = (l.clone(), u.clone(), answer.clone(), base.clone());
                std::thread::spawn(move || serve(conn, &l, &u, &a, &base));
            }
        });
        Replay {
            port,
            log,
            unanswered,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests served with `method` whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.contains(part))
            .count()
    }

    pub fn assert_all_answered(&self) {
        let u = self.unanswered.lock().unwrap();
        assert!(u.is_empty(), "requests with no recorded answer: {u:#?}");
    }
}

/// One connection, one request after another (keep-alive, as reqwest uses it).
fn serve(
    conn: TcpStream,
    log: &Mutex<Vec<Request>>,
    unanswered: &Mutex<Vec<Request>>,
    answer: &Mutex<Box<Handler>>,
    base: &str,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let req = Request {
            method,
            path: percent_encoding::percent_decode_str(path)
                .decode_utf8_lossy()
                .into_owned(),
            query: query.to_string(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        log.lock().unwrap().push(req.clone());
        let a = (answer.lock().unwrap())(&req, base).unwrap_or_else(|| {
            unanswered.lock().unwrap().push(req.clone());
            Answer::json(
                404,
                &serde_json::json!({ "error": { "code": "NoRecording", "message": format!("{} {}", req.method, req.path) } }),
            )
        });
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            a.status,
            a.body.len()
        );
        if !a.body.is_empty() {
            head += "Content-Type: application/json; charset=utf-8\r\n";
        }
        for (k, v) in &a.headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        if out.write_all(head.as_bytes()).is_err() || out.write_all(a.body.as_bytes()).is_err() {
            return;
        }
    }
}
