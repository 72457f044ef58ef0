//! `stage emulator` started per test on a free loopback port, backed by a test's Azurite.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Emulator {
    child: Child,
    pub port: u16,
    pub data: tempfile::TempDir,
    blob_endpoint: String,
}

impl Emulator {
    /// `blob_endpoint` is Azurite's `http://127.0.0.1:PORT/devstoreaccount1`.
    /// On port 0, reading back the port it got: no window for a parallel test to take it.
    pub fn start(blob_endpoint: &str, extra: &[&str]) -> Emulator {
        let data = tempfile::tempdir().unwrap();
        let (child, port) = spawn(data.path(), blob_endpoint, extra);
        Emulator {
            child,
            port,
            data,
            blob_endpoint: blob_endpoint.to_string(),
        }
    }

    /// Stops the emulator with `signal` and starts a new one on the same data directory
    /// (and a new port), with `extra` flags.
    pub fn restart(&mut self, signal: i32, extra: &[&str]) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        assert!(
            signal == libc::SIGKILL || status.success(),
            "the emulator did not stop cleanly: {status}"
        );
        let (child, port) = spawn(self.data.path(), &self.blob_endpoint, extra);
        self.child = child;
        self.port = port;
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

    /// Every item of a paged ARM list, following `nextLink` to the end.
    pub fn list(&self, path: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let (status, page) = self.get(&p);
            assert_eq!(status, 200, "{p}: {page}");
            out.extend(page["value"].as_array().cloned().unwrap_or_default());
            next = page["nextLink"].as_str().map(|n| {
                let rest = n.split_once("127.0.0.1:").expect("a loopback link").1;
                rest[rest.find('/').expect("a path")..].to_string()
            });
        }
        out
    }

    /// Makes a subnet, as the seed's Terraform does before stage runs.
    pub fn create_subnet(&self, id: &str, prefix: &str) {
        let body = serde_json::json!({ "properties": { "addressPrefix": prefix } });
        let (status, r) = self.request("PUT", &format!("{id}?api-version=2024-05-01"), Some(&body));
        assert!(status == 201 || status == 200, "{r}");
    }

    /// Any ARM request, over a plain HTTP/1.1 connection: (status, JSON body or null).
    /// Gives the HPC Cache Resource Provider its two roles on a storage account, as an owner
    /// of the account would before creating a file system with HSM settings.
    pub fn grant_provider_roles(&self, account: &str) {
        let (status, sp) = self.request(
            "GET",
            "/v1.0/servicePrincipals?$filter=appId%20eq%20%274392ab71-2ce2-4b0d-8770-b352745c73f5%27",
            None,
        );
        assert_eq!(status, 200, "{sp}");
        let principal = sp["value"][0]["id"].as_str().unwrap().to_string();
        for (i, role) in [
            "17d1049b-9a84-46fb-8f53-869881c3d3ab",
            "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        ]
        .iter()
        .enumerate()
        {
            let body = serde_json::json!({ "properties": {
                "roleDefinitionId": format!("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{role}"),
                "principalId": principal,
            }});
            let (status, r) = self.request(
                "PUT",
                &format!("{account}/providers/Microsoft.Authorization/roleAssignments/00000000-0000-0000-0000-00000000000{i}?api-version=2022-04-01"),
                Some(&body),
            );
            assert_eq!(status, 201, "{r}");
        }
    }

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
            "{method} {path}{} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer owner\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            // Paths with a query carry their own api-version (or, for Graph, none).
            if path.contains('?') { "" } else { "?api-version=2026-01-01" },
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

fn spawn(data: &std::path::Path, blob_endpoint: &str, extra: &[&str]) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stage"))
        .args(["-q", "emulator", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .args(["--blob-endpoint", blob_endpoint])
        // Azure's proportions at 1/3000: a create in 0.3 s, an archive's fixed cost 19 ms.
        .args(if extra.contains(&"--time-scale") {
            &[][..]
        } else {
            &["--time-scale", "1/3000"][..]
        })
        .args(extra)
        .env(
            "AZURE_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stage emulator");
    let err = child.stderr.take().expect("piped");
    let port = crate::common::announced_port(
        err,
        "ARM endpoint http://127.0.0.1:",
        Duration::from_secs(30),
    )
    .expect("the emulator did not start listening");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the emulator did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
