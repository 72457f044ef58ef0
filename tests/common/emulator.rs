//! `stage emulator` started per test on a free loopback port, backed by a test's Azurite.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Emulator {
    child: Child,
    pub port: u16,
    pub data: tempfile::TempDir,
}

impl Emulator {
    /// `blob_endpoint` is Azurite's `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn start(blob_endpoint: &str, extra: &[&str]) -> Emulator {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stage"))
            .args(["-q", "emulator", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data.path())
            .args(["--blob-endpoint", blob_endpoint])
            .args(["--provision-delay", "300ms", "--delete-delay", "200ms"])
            .args(extra)
            .env(
                "AZURE_STORAGE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stage emulator");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the emulator did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Emulator { child, port, data }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn fs_dir(&self, name: &str) -> PathBuf {
        self.data.path().join("filesystems").join(name)
    }

    /// GET an ARM path as a client would: (status, JSON body or null).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.request("GET", path, None)
    }

    /// Any ARM request, over a plain HTTP/1.1 connection: (status, JSON body or null).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path}?api-version=2026-01-01 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
