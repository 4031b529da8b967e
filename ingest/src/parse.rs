//! Parsing a request: the path (token, test environment, method) and the body, in whichever
//! of the encodings the Bot API accepts. File parts stream to the blob store.

use crate::IngestConfig;
use axum::body::Body;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, HeaderMap};
use percent_encoding::percent_decode_str;
use schemas::body::INLINE_LIMIT;
use schemas::{ApiError, BodyBytes, Call, CallBody, CallId, Part};
use std::io;
use std::time::Duration;
use store::blobs::{BlobError, Blobs};

/// What the path names. The token is percent-decoded (clients send `%3A` for `:`).
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub token: String,
    pub test_env: bool,
    pub method: String,
}

/// Splits `/bot<token>/[test/]<method>`. Never fails: what is wrong is judged by the caller.
pub fn target(path: &str) -> Target {
    let rest = path.strip_prefix("/bot").unwrap_or(path);
    let (token, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (test_env, method) = match rest.strip_prefix("test/") {
        Some(m) => (true, m),
        None => (false, rest),
    };
    Target {
        token: percent_decode_str(token).decode_utf8_lossy().into_owned(),
        test_env,
        method: percent_decode_str(method).decode_utf8_lossy().into_owned(),
    }
}

/// The long-poll allowance of a call: a getUpdates with `timeout=50` may take 50 s more than
/// any other call.
pub fn long_poll(call: &Call) -> Duration {
    if !call.method.eq_ignore_ascii_case("getUpdates") {
        return Duration::ZERO;
    }
    let secs = match call.params().get("timeout") {
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().unwrap_or(0.0),
        _ => 0.0,
    };
    // `NaN` parses, and no Duration holds it.
    let secs = if secs.is_finite() { secs } else { 0.0 };
    Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
}

fn media_type(headers: &HeaderMap) -> (String, Option<String>) {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mime = raw
        .as_deref()
        .and_then(|r| r.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (mime, raw)
}

async fn read_all(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|_| ApiError::bad_request("the request body could not be read"))?
    {
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Whether the body is multipart (an upload's parts, which stream into the blob store).
pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|raw| raw.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Parses the body by content type. `call_id` names the call in what is logged.
pub async fn body(
    cfg: &IngestConfig,
    blobs: &dyn Blobs,
    headers: &HeaderMap,
    body: Body,
    call_id: CallId,
) -> Result<CallBody, ApiError> {
    let blob_error = |e| blob_error(e, call_id);
    let (mime, raw) = media_type(headers);
    match mime.as_str() {
        "multipart/form-data" => {
            multipart(cfg, blobs, raw.as_deref().unwrap_or(""), body, call_id).await
        }
        "application/json" => {
            let bytes = read_all(body, cfg.max_body).await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(CallBody::Empty);
            }
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|_| ApiError::bad_request("can't parse JSON object"))?;
            if !value.is_object() {
                return Err(ApiError::bad_request("can't parse JSON object"));
            }
            Ok(CallBody::Json { value })
        }
        "application/x-www-form-urlencoded" => {
            let bytes = read_all(body, cfg.max_body).await?;
            if std::str::from_utf8(&bytes).is_err() {
                return Err(ApiError::bad_request("can't parse request parameters"));
            }
            let pairs = form_urlencoded::parse(&bytes).into_owned().collect();
            Ok(CallBody::Form { pairs })
        }
        _ => {
            let bytes = read_all(body, cfg.max_body).await?;
            if bytes.is_empty() {
                return Ok(CallBody::Empty);
            }
            let data = if bytes.len() <= INLINE_LIMIT {
                BodyBytes::inline(&bytes)
            } else {
                let blob = blobs
                    .put_bytes(bytes, cfg.max_body as u64)
                    .await
                    .map_err(blob_error)?;
                BodyBytes::Blob { blob }
            };
            Ok(CallBody::Other {
                content_type: raw.unwrap_or_default(),
                data,
            })
        }
    }
}

fn blob_error(e: BlobError, call_id: CallId) -> ApiError {
    match e {
        BlobError::TooLarge { .. } => ApiError::too_large(),
        BlobError::Source(e) => ApiError::bad_request(format!("can't parse multipart body: {e}")),
        other => {
            tracing::error!(error = %other, %call_id, "blob store failed");
            ApiError::internal("the upload could not be stored")
        }
    }
}

fn multer_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            ApiError::too_large()
        }
        other => ApiError::bad_request(format!("can't parse multipart body: {other}")),
    }
}

/// `filename*=UTF-8''na%C3%AFve.txt` (RFC 5987), which multer does not read.
fn extended_file_name(headers: &HeaderMap) -> Option<String> {
    let cd = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    cd.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("filename*") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        let (_charset, rest) = v.split_once('\'')?;
        let (_lang, encoded) = rest.split_once('\'')?;
        Some(percent_decode_str(encoded).decode_utf8_lossy().into_owned())
    })
}

async fn multipart(
    cfg: &IngestConfig,
    blobs: &dyn Blobs,
    content_type: &str,
    body: Body,
    call_id: CallId,
) -> Result<CallBody, ApiError> {
    let blob_error = |e| blob_error(e, call_id);
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| ApiError::bad_request("can't parse multipart body: no boundary"))?;
    let limits = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .per_field(cfg.max_upload)
            .whole_stream(cfg.max_upload.saturating_mul(4)),
    );
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = {
        let seen = seen.clone();
        body.into_data_stream().inspect_ok(move |c| {
            seen.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let mut mp = multer::Multipart::with_constraints(counted, boundary, limits);
    let mut parts = Vec::new();
    loop {
        let next = mp.next_field().await;
        // A form with no parts arrives as an empty body from some clients: no parameters.
        if let Err(multer::Error::IncompleteStream) = &next {
            if parts.is_empty() && seen.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                break;
            }
        }
        let Some(mut field) = next.map_err(multer_error)? else {
            break;
        };
        if parts.len() >= cfg.max_parts {
            return Err(ApiError::bad_request(
                "too many parts in the multipart body",
            ));
        }
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field
            .file_name()
            .map(str::to_owned)
            .or_else(|| extended_file_name(field.headers()));
        let content_type = field.content_type().map(|m| m.to_string());
        let textual = file_name.is_none()
            && content_type
                .as_deref()
                .is_none_or(|c| c.to_ascii_lowercase().starts_with("text/plain"));
        if textual {
            // A text field is read into memory, bounded; one that is not UTF-8 is binary
            // content without a file name and is kept as a file part.
            let mut buf = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
                if buf.len() + chunk.len() > cfg.max_text_part {
                    return Err(ApiError::bad_request(format!(
                        "parameter {name} is too long"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            match String::from_utf8(buf) {
                Ok(value) => parts.push(Part::Text { name, value }),
                Err(e) => {
                    let blob = blobs
                        .put_bytes(Bytes::from(e.into_bytes()), cfg.max_upload)
                        .await
                        .map_err(blob_error)?;
                    parts.push(Part::File {
                        name,
                        file_name: None,
                        content_type,
                        blob,
                    });
                }
            }
        } else {
            let stream = field.map_err(|e| io::Error::other(e.to_string()));
            let blob = blobs
                .put(Box::pin(stream), cfg.max_upload)
                .await
                .map_err(blob_error)?;
            parts.push(Part::File {
                name,
                file_name,
                content_type,
                blob,
            });
        }
    }
    Ok(CallBody::Multipart { parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        assert_eq!(
            target("/bot123%3Aabc/sendMessage"),
            Target {
                token: "123:abc".into(),
                test_env: false,
                method: "sendMessage".into()
            }
        );
        let t = target("/bot1:x/test/getMe");
        assert!(t.test_env);
        assert_eq!(t.method, "getMe");
        assert_eq!(target("/bot1:x").method, "");
        assert_eq!(target("/bot1:x/a/b").method, "a/b");
        assert_eq!(target("/bot%ff/x").token, "\u{fffd}");
    }

    #[test]
    fn reads_rfc5987_file_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_DISPOSITION,
            "form-data; name=\"document\"; filename*=UTF-8''na%C3%AFve.txt"
                .parse()
                .unwrap(),
        );
        assert_eq!(extended_file_name(&h).as_deref(), Some("naïve.txt"));
    }
}
