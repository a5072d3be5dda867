//! Generation through an OpenAI-compatible `/v1/chat/completions` endpoint over HTTP/1.1:
//! `http://` (a local model server, a sidecar, or `tenantscale llm-sim`) or `https://` (rustls,
//! trusting the system's roots or `--llm-ca`). One overall timeout per answer; connection
//! failures, 429 and 5xx are retried with exponential backoff inside it.

use axum::body::Bytes;
use axum::http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::time::Duration;
use tenantscale_tls::{HttpsConnector, TlsError};

/// Where and how to ask for answers.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// The full endpoint URL, e.g. `http://127.0.0.1:9000/v1/chat/completions`.
    pub url: Uri,
    /// PEM CA certificates an `https://` URL's server is verified against, instead of the
    /// system's roots.
    pub ca: Option<PathBuf>,
    pub model: String,
    /// Sent as a bearer token when set.
    pub api_key: Option<String>,
    /// Deadline for the whole answer, retries included.
    pub timeout: Duration,
    /// Extra attempts after a retryable failure.
    pub retries: u32,
    pub max_tokens: u32,
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LlmError {
    #[error("the LLM did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the LLM failed: {0}")]
    Upstream(String),
}

/// Largest LLM response read, bytes.
const MAX_RESPONSE: usize = 4 << 20;

/// An LLM client with a connection pool.
#[derive(Debug)]
pub struct Llm {
    config: LlmConfig,
    client: Client<HttpsConnector, Full<Bytes>>,
}

/// Whether a failed attempt is worth repeating.
enum Attempt {
    Retry(String),
    Fatal(String),
}

impl Llm {
    /// Fails only on TLS settings that cannot work (an unreadable CA file, no roots).
    pub fn new(config: LlmConfig) -> Result<Self, TlsError> {
        let connector = tenantscale_tls::http_connector(&config.url, config.ca.as_deref())?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { config, client })
    }

    /// An answer to `question` from `passages` alone.
    pub async fn answer(&self, question: &str, passages: &[&str]) -> Result<String, LlmError> {
        let context: String = passages
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[{}] {p}\n", i + 1))
            .collect();
        let body = serde_json::json!({
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "messages": [
                {"role": "system", "content": "Answer the question using only the numbered context passages. If they do not contain the answer, say so."},
                {"role": "user", "content": format!("Context:\n{context}\nQuestion: {question}")},
            ],
        });
        let body = Bytes::from(body.to_string());
        let attempts = async {
            let mut backoff = Duration::from_millis(100);
            let mut attempt = 0;
            loop {
                match self.attempt(body.clone()).await {
                    Ok(answer) => return Ok(answer),
                    Err(Attempt::Retry(why)) if attempt < self.config.retries => {
                        tracing::debug!(attempt, %why, "retrying the LLM");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        attempt += 1;
                    }
                    Err(Attempt::Retry(why) | Attempt::Fatal(why)) => {
                        return Err(LlmError::Upstream(why));
                    }
                }
            }
        };
        tokio::time::timeout(self.config.timeout, attempts)
            .await
            .unwrap_or(Err(LlmError::Timeout(self.config.timeout)))
    }

    async fn attempt(&self, body: Bytes) -> Result<String, Attempt> {
        let mut request =
            Request::post(self.config.url.clone()).header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Attempt::Fatal(e.to_string()))?;
        let response =
            self.client.request(request).await.map_err(|e| {
                Attempt::Retry(format!("request: {}", tenantscale_tls::describe(&e)))
            })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| Attempt::Retry(format!("response body: {e}")))?
            .to_bytes();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Attempt::Retry(format!("status {status}")));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(200).collect();
            return Err(Attempt::Fatal(format!("status {status}: {text}")));
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Attempt::Fatal(format!("response is not JSON: {e}")))?;
        json.pointer("/choices/0/message/content")
            .and_then(|c| c.as_str())
            .map(str::to_string)
            .ok_or_else(|| Attempt::Fatal("response has no choices[0].message.content".into()))
    }
}
