//! A Bot API request as the sandbox reads it: token, method, and parameters from the query
//! string and a JSON, form or multipart body. Multipart files go to disk while hashed.

use crate::Sandbox;
use axum::body::Body;
use futures_util::TryStreamExt;
use http::{header, Request};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug)]
pub struct Upload {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug)]
pub struct BotRequest {
    pub token: String,
    pub bot_id: i64,
    pub test_env: bool,
    pub method: String,
    pub http_method: String,
    /// `none`, `query`, `json`, `form` or `multipart`: how the parameters came.
    pub encoding: &'static str,
    pub params: Map<String, Value>,
    pub uploads: HashMap<String, Upload>,
}

#[derive(Debug)]
pub enum ParseError {
    Unauthorized,
    NotFound,
    TooLarge,
    Bad(String),
}

impl BotRequest {
    /// A parameter as text, whatever JSON type it came as.
    pub fn str(&self, k: &str) -> Option<String> {
        match self.params.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    pub fn i64(&self, k: &str) -> Option<i64> {
        match self.params.get(k)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn bool(&self, k: &str) -> bool {
        match self.params.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true" || s == "1",
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    /// A parameter that holds JSON: a JSON-typed value as is, a string parsed.
    pub fn json(&self, k: &str) -> Option<Value> {
        match self.params.get(k)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }

    /// The parameters as recorded for the control API: uploads described by name, size and
    /// sha256.
    pub fn recorded_params(&self) -> Map<String, Value> {
        let mut p = self.params.clone();
        for (name, u) in &self.uploads {
            p.insert(
                name.clone(),
                serde_json::json!({"file": {
                    "file_name": u.file_name,
                    "size": u.size,
                    "sha256": u.sha256,
                }}),
            );
        }
        p
    }
}

pub fn valid_token(token: &str) -> Option<i64> {
    let (id, secret) = token.split_once(':')?;
    if !(30..=100).contains(&secret.len())
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    // Each bot has one token, as at Telegram: `token_for`'s. Another secret with its id is
    // refused (what a gateway must not answer for the bot on its own).
    id.parse::<i64>()
        .ok()
        .filter(|v| *v > 0 && token == crate::token_for(*v))
}

/// `/bot<token>/[test/]<method>` → (token, test_env, method).
pub fn split_path(path: &str, prefix: &str) -> Option<(String, bool, String)> {
    let rest = path.strip_prefix(prefix)?;
    let (token, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (test, method) = match rest.strip_prefix("test/") {
        Some(m) => (true, m),
        None => (false, rest),
    };
    Some((
        percent_decode_str(token).decode_utf8_lossy().into_owned(),
        test,
        percent_decode_str(method).decode_utf8_lossy().into_owned(),
    ))
}

pub async fn parse(sb: &Sandbox, req: Request<Body>) -> Result<BotRequest, ParseError> {
    let (parts, body) = req.into_parts();
    let (token, test_env, method) =
        split_path(parts.uri.path(), "/bot").ok_or(ParseError::NotFound)?;
    let bot_id = valid_token(&token).ok_or(ParseError::Unauthorized)?;
    if method.is_empty() || method.contains('/') {
        return Err(ParseError::NotFound);
    }
    let mut params = Map::new();
    let mut encoding = "none";
    if let Some(q) = parts.uri.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            params.insert(k.into_owned(), Value::String(v.into_owned()));
            encoding = "query";
        }
    }
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut uploads = HashMap::new();
    match mime.as_str() {
        "multipart/form-data" => {
            encoding = "multipart";
            multipart(sb, &ct, body, &mut params, &mut uploads).await?;
        }
        "application/json" => {
            let bytes = read(body, 10 * 1024 * 1024).await?;
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                encoding = "json";
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Object(m)) => params.extend(m),
                    _ => return Err(ParseError::Bad("can't parse JSON object".into())),
                }
            }
        }
        "application/x-www-form-urlencoded" => {
            let bytes = read(body, 10 * 1024 * 1024).await?;
            if !bytes.is_empty() {
                encoding = "form";
            }
            for (k, v) in form_urlencoded::parse(&bytes) {
                params.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        _ => {
            read(body, 10 * 1024 * 1024).await?;
        }
    }
    Ok(BotRequest {
        token,
        bot_id,
        test_env,
        method,
        http_method: parts.method.as_str().to_owned(),
        encoding,
        params,
        uploads,
    })
}

async fn read(body: Body, limit: usize) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    let mut s = body.into_data_stream();
    while let Some(c) = s
        .try_next()
        .await
        .map_err(|e| ParseError::Bad(e.to_string()))?
    {
        if out.len() + c.len() > limit {
            return Err(ParseError::TooLarge);
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

async fn multipart(
    sb: &Sandbox,
    ct: &str,
    body: Body,
    params: &mut Map<String, Value>,
    uploads: &mut HashMap<String, Upload>,
) -> Result<(), ParseError> {
    let boundary = multer::parse_boundary(ct).map_err(|e| ParseError::Bad(e.to_string()))?;
    let mut mp = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut total: u64 = 0;
    let mut too_large = false;
    let mut fields = 0;
    loop {
        let next = mp.next_field().await;
        if let Err(multer::Error::IncompleteStream) = &next {
            if fields == 0 && total == 0 {
                // An empty body: a form with no parts.
                break;
            }
        }
        let Some(mut field) = next.map_err(|e| ParseError::Bad(e.to_string()))? else {
            break;
        };
        fields += 1;
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let is_file = file_name.is_some()
            || content_type
                .as_deref()
                .is_some_and(|c| !c.to_ascii_lowercase().starts_with("text/plain"));
        if too_large {
            // Read the rest so the client gets the 413 rather than a reset connection.
            while field
                .chunk()
                .await
                .map_err(|e| ParseError::Bad(e.to_string()))?
                .is_some()
            {}
            continue;
        }
        if is_file {
            let path = sb.temp_path();
            let mut f = tokio::fs::File::create(&path)
                .await
                .map_err(|e| ParseError::Bad(e.to_string()))?;
            let mut h = Sha256::new();
            let mut size = 0u64;
            while let Some(c) = field
                .chunk()
                .await
                .map_err(|e| ParseError::Bad(e.to_string()))?
            {
                total += c.len() as u64;
                size += c.len() as u64;
                if total > sb.cfg.max_upload {
                    too_large = true;
                    continue;
                }
                h.update(&c);
                f.write_all(&c)
                    .await
                    .map_err(|e| ParseError::Bad(e.to_string()))?;
            }
            f.flush().await.ok();
            if too_large {
                let _ = tokio::fs::remove_file(&path).await;
                continue;
            }
            uploads.insert(
                name,
                Upload {
                    path,
                    size,
                    sha256: hex::encode(h.finalize()),
                    file_name,
                    content_type,
                },
            );
        } else {
            let mut buf = Vec::new();
            while let Some(c) = field
                .chunk()
                .await
                .map_err(|e| ParseError::Bad(e.to_string()))?
            {
                total += c.len() as u64;
                if total > sb.cfg.max_upload {
                    too_large = true;
                    continue;
                }
                buf.extend_from_slice(&c);
            }
            if !too_large {
                params.insert(
                    name,
                    Value::String(String::from_utf8_lossy(&buf).into_owned()),
                );
            }
        }
    }
    if too_large {
        for u in uploads.values() {
            let _ = tokio::fs::remove_file(&u.path).await;
        }
        return Err(ParseError::TooLarge);
    }
    Ok(())
}
