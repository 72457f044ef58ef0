//! A small ARM client over reqwest: bearer tokens, retries on 429/5xx honouring
//! `Retry-After`, long-running operations through `Azure-AsyncOperation` (or `Location`), and
//! ARM errors rendered with their code, message and target.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::models::{API_VERSION, AsyncOperation, ErrorResponse};

/// Attempts per request when ARM throttles or fails.
const ATTEMPTS: u32 = 6;
/// Polling interval when the service names none; also the floor, so polling never spins.
const POLL: Duration = Duration::from_secs(2);
const GRAPH: &str = "https://graph.microsoft.com";

#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error("{method} {path}: {code}: {message}{}", target.as_ref().map(|t| format!(" (target: {t})")).unwrap_or_default())]
    Service {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
        target: Option<String>,
    },
    #[error("{method} {path}: {message}")]
    Transport {
        method: String,
        path: String,
        message: String,
    },
    #[error("cannot get a token for Azure Resource Manager: {0}")]
    Token(String),
    #[error("{path}: the long-running operation {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Operation {
        path: String,
        status: String,
        message: Option<String>,
    },
}

impl ArmError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub enum Auth {
    Credential(Arc<dyn TokenCredential>),
    /// A fixed bearer token, only for a loopback emulator (which accepts any).
    Emulator,
}

pub struct Arm {
    http: reqwest::Client,
    endpoint: String,
    auth: Auth,
    /// Floor for poll intervals (tests shorten it against the emulator).
    poll: Duration,
    requests: std::sync::atomic::AtomicU64,
}

/// A response that arrived: status, headers and body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self, method: &str, path: &str) -> Result<T, ArmError> {
        serde_json::from_slice(&self.body).map_err(|e| ArmError::Transport {
            method: method.into(),
            path: path.into(),
            message: format!("unexpected response body: {e}"),
        })
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Arm {
    pub fn new(endpoint: &str, auth: Auth) -> Result<Arm, ArmError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ArmError::Transport {
                method: "-".into(),
                path: endpoint.into(),
                message: e.to_string(),
            })?;
        let loopback = super::is_loopback_http(endpoint);
        Ok(Arm {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            auth,
            poll: if loopback {
                Duration::from_millis(200)
            } else {
                POLL
            },
            requests: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Requests sent so far (for the polling-rate benchmark and tests).
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A Microsoft Graph URL: Graph itself, or the emulator standing in for it.
    pub fn graph_url(&self, path: &str) -> String {
        let base = if super::is_loopback_http(&self.endpoint) {
            self.endpoint.as_str()
        } else {
            GRAPH
        };
        format!("{base}{path}")
    }

    async fn token(&self, url: &str) -> Result<String, ArmError> {
        let scope = if url.starts_with(GRAPH) {
            "https://graph.microsoft.com/.default"
        } else {
            "https://management.azure.com/.default"
        };
        match &self.auth {
            Auth::Emulator => Ok("emulator".into()),
            Auth::Credential(c) => c
                .get_token(&[scope], None)
                .await
                .map(|t| t.token.secret().to_string())
                .map_err(|e| ArmError::Token(crate::store::redact::secrets(&e.to_string()))),
        }
    }

    fn url(&self, path: &str) -> String {
        // Full URLs (operation status, Graph) and other providers' versions are sent as given.
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_string();
        }
        if path.contains("api-version=") {
            return format!("{}{path}", self.endpoint);
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={API_VERSION}", self.endpoint)
    }

    /// Sends one request, retrying throttling and server errors; returns any other reply.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply, ArmError> {
        let url = self.url(path);
        let payload = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        // Backoff starts at the poll floor: 2 s against Azure, 200 ms against an emulator.
        let mut delay = self.poll / 2;
        for attempt in 1..=ATTEMPTS {
            let token = self.token(&url).await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token)
                .header("accept", "application/json");
            if let Some(p) = &payload {
                req = req
                    .header("content-type", "application/json")
                    .body(p.clone());
            }
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let transient = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    let retry = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !retry || attempt == ATTEMPTS {
                        return Ok(Reply {
                            status,
                            headers,
                            body,
                        });
                    }
                    tracing::debug!(%status, path, attempt, "ARM asked to retry");
                    retry_after(&headers)
                }
                Err(e) if attempt == ATTEMPTS => {
                    return Err(ArmError::Transport {
                        method: method.to_string(),
                        path: path.into(),
                        message: crate::store::redact::secrets(&e.to_string()),
                    });
                }
                Err(e) => {
                    tracing::debug!(path, attempt, "ARM request failed, retrying: {e}");
                    None
                }
            };
            tokio::time::sleep(transient.unwrap_or(delay).max(Duration::from_millis(100))).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Turns a non-success reply into an ARM error.
    pub fn check(method: &Method, path: &str, reply: Reply) -> Result<Reply, ArmError> {
        if reply.status.is_success() {
            return Ok(reply);
        }
        let parsed: Option<ErrorResponse> = serde_json::from_slice(&reply.body).ok();
        let (code, message, target) = match parsed {
            Some(e) => (e.error.code, e.error.message, e.error.target),
            None => (
                reply.status.to_string(),
                String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(300)
                    .collect(),
                None,
            ),
        };
        Err(ArmError::Service {
            method: method.to_string(),
            path: path.into(),
            status: reply.status.as_u16(),
            code,
            message,
            target,
        })
    }

    /// GET; `None` for 404.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ArmError> {
        let reply = self.send(Method::GET, path, None::<&()>).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let reply = Self::check(&Method::GET, path, reply)?;
        reply.json("GET", path).map(Some)
    }

    /// GET of a collection, following `nextLink` page by page (ARM pages long lists, and a
    /// job on the second page holds the file system as surely as one on the first); `[]`
    /// for 404.
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ArmError> {
        #[derive(serde::Deserialize)]
        struct Page<T> {
            #[serde(default = "Vec::new")]
            value: Vec<T>,
            #[serde(rename = "nextLink")]
            next_link: Option<String>,
        }
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        // A service that links a page to itself must not hold the run forever.
        let mut pages = 0u32;
        while let Some(url) = next.take() {
            // The bearer token goes wherever the link says: only to the service it came from.
            if url.contains("://") && !url.starts_with(&format!("{}/", self.endpoint)) {
                return Err(ArmError::Transport {
                    method: "GET".into(),
                    path: path.into(),
                    message: format!("nextLink leaves {}: not followed", self.endpoint),
                });
            }
            let Some(page) = self.get::<Page<T>>(&url).await? else {
                break;
            };
            out.extend(page.value);
            pages += 1;
            next = page.next_link.filter(|n| !n.is_empty() && pages < 10_000);
        }
        Ok(out)
    }

    /// Sends a request that may start a long-running operation and waits for it to end.
    /// `on_poll` is called between polls (progress).
    pub async fn call_lro(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        mut on_poll: impl FnMut(),
    ) -> Result<Reply, ArmError> {
        let reply = self.send(method.clone(), path, body).await?;
        let reply = Self::check(&method, path, reply)?;
        let Some(status_url) = reply.header("azure-asyncoperation").or_else(|| {
            (reply.status == StatusCode::ACCEPTED)
                .then(|| reply.header("location"))
                .flatten()
        }) else {
            return Ok(reply);
        };
        let mut wait = retry_after(&reply.headers)
            .unwrap_or(self.poll)
            .max(self.poll);
        loop {
            tokio::time::sleep(wait).await;
            on_poll();
            let r = self.send(Method::GET, &status_url, None::<&()>).await?;
            let r = Self::check(&Method::GET, path, r)?;
            wait = retry_after(&r.headers).unwrap_or(self.poll).max(self.poll);
            if r.status == StatusCode::ACCEPTED {
                continue;
            }
            let op: AsyncOperation = match serde_json::from_slice(&r.body) {
                Ok(op) => op,
                // A Location poll that ended returns the resource itself (or nothing).
                Err(_) => return Ok(reply),
            };
            match op.status.as_str() {
                "Succeeded" => return Ok(reply),
                "Failed" | "Canceled" => {
                    return Err(ArmError::Operation {
                        path: path.into(),
                        status: op.status.to_lowercase(),
                        message: op.error.map(|e| format!("{}: {}", e.code, e.message)),
                    });
                }
                _ => {}
            }
        }
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll
    }
}
