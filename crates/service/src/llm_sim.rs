//! `tenantscale llm-sim`: a TEST DOUBLE for a paid LLM API. It serves an OpenAI-compatible
//! `POST /v1/chat/completions` that waits like a model would (a fixed time to first token,
//! then tokens at a set rate) and answers with text lifted from the prompt, so pods can be
//! load-tested here without a model or an API bill. It generates nothing meaningful.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;

/// How the simulated model behaves.
#[derive(Debug, Clone)]
pub struct LlmSimConfig {
    /// Wait before the first token.
    pub latency: Duration,
    /// Tokens generated per second after it (0: all at once).
    pub tokens_per_second: f64,
    /// Most tokens in an answer when the request names no `max_tokens`.
    pub max_tokens: usize,
}

/// The router of the simulated API.
pub fn router(config: LlmSimConfig) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(Arc::new(config))
}

async fn complete(
    State(config): State<Arc<LlmSimConfig>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
    let bad = |m: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": {"message": m, "type": "invalid_request_error"}})),
        )
    };
    let Json(request) = body.map_err(|e| bad(&e.body_text()))?;
    let messages = request
        .get("messages")
        .and_then(|m| m.as_array())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("messages must be a non-empty array"))?;
    let prompt = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
        .ok_or_else(|| bad("the last message needs a string content"))?;
    let max_tokens = request
        .get("max_tokens")
        .and_then(|m| m.as_u64())
        .map_or(config.max_tokens, |m| m as usize);
    // "Answer" with the first context passage's words: deterministic and visibly grounded.
    let source = prompt
        .lines()
        .find(|l| l.starts_with("[1] "))
        .map_or(prompt, |l| &l[4..]);
    let words: Vec<&str> = source.split_whitespace().take(max_tokens).collect();
    let answer = format!("(llm-sim) {}", words.join(" "));
    let mut wait = config.latency;
    if config.tokens_per_second > 0.0 {
        wait += Duration::from_secs_f64(words.len() as f64 / config.tokens_per_second);
    }
    tokio::time::sleep(wait).await;
    Ok(Json(serde_json::json!({
        "id": "llm-sim",
        "object": "chat.completion",
        "model": request.get("model").cloned().unwrap_or_else(|| "llm-sim".into()),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "finish_reason": if words.len() == max_tokens { "length" } else { "stop" },
        }],
        "usage": {
            "prompt_tokens": prompt.split_whitespace().count(),
            "completion_tokens": words.len(),
            "total_tokens": prompt.split_whitespace().count() + words.len(),
        },
    })))
}
