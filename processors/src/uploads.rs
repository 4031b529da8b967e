//! Uploads from URLs (ENHANCED.md, "Files: uploads"): a send method whose file parameter is an
//! `http(s)` URL gets the file fetched by the gateway — not by Telegram, whose URL limits are
//! 20 MB (5 MB for photos) — through the SSRF-safe [`fetch`] crate, streamed into the blob
//! store. Then:
//! - within the Bot API's multipart limits (50 MB, 10 MB for photos), or with a local Bot API
//!   server (2000 MB): the call goes upstream as multipart with the file as a part;
//! - larger: uploaded over MTProto as the bot (`messages.uploadMedia` to itself) and the call
//!   goes upstream with the resulting file_id, so the answer is the Bot API's own Message.
//!
//! `file_name` (a gateway parameter, not sent upstream) names the file; otherwise the name
//! comes from the URL's Content-Disposition or last path segment.

use crate::passthrough::open_token;
use crate::Deps;
use fetch::FetchError;
use schemas::{ApiError, Call, CallBody, Envelope, Part, Response};
use serde_json::Value;
use store::blobs::BlobError;
use telegram::mtproto::{tl, NewMedia};

/// The file parameter of each single-file send method.
pub fn file_param(method: &str) -> Option<&'static str> {
    Some(match method {
        "sendDocument" => "document",
        "sendPhoto" => "photo",
        "sendVideo" => "video",
        "sendAudio" => "audio",
        "sendVoice" => "voice",
        "sendAnimation" => "animation",
        "sendVideoNote" => "video_note",
        "sendSticker" => "sticker",
        _ => return None,
    })
}

/// Whether the call's file parameter is a URL the gateway should fetch.
pub fn is_url_upload(call: &Call) -> bool {
    let Some(param) = schemas::catalogue::canonical(&call.method).and_then(file_param) else {
        return false;
    };
    call.params()
        .get(param)
        .and_then(Value::as_str)
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("http://") || v.starts_with("https://")
        })
}

/// The Bot API's multipart limit for a method's file.
fn bot_api_limit(method: &str) -> u64 {
    if method == "sendPhoto" {
        10 * 1024 * 1024
    } else {
        50 * 1024 * 1024
    }
}

fn bad_url(e: &FetchError) -> Response {
    Response::from_error(&ApiError::bad_request(format!(
        "failed to get HTTP URL content: {e}"
    )))
}

/// A parameter's value as a multipart text part carries it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn send_from_url(deps: &Deps, env: &Envelope<Call>) -> Response {
    let token = match open_token(deps, env) {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    let method = schemas::catalogue::canonical(&env.payload.method).unwrap_or_default();
    let param = file_param(method).expect("routed here for a send method");
    let mut params = env.payload.params();
    let url = text(&params[param]);
    let given_name = params.remove("file_name").map(|v| text(&v));

    let fetched = match deps.files.fetcher().open(&url).await {
        Ok(f) => f,
        Err(e) => {
            tracing::info!(error = %e, "URL upload refused or failed");
            return bad_url(&e);
        }
    };
    let file_name = given_name
        .or(fetched.file_name.clone())
        .unwrap_or_else(|| "file".into());
    let content_type = fetched.content_type.clone();
    let blob = match deps.blobs.put(fetched.body, deps.files.max_upload()).await {
        Ok(b) => b,
        Err(BlobError::TooLarge { limit }) => return bad_url(&FetchError::TooLarge(limit)),
        Err(BlobError::Source(error)) => {
            tracing::info!(%error, "URL download broke off");
            return bad_url(&FetchError::Failed);
        }
        Err(error) => {
            tracing::error!(%error, "could not keep a fetched file");
            return Response::from_error(&ApiError::internal("the file could not be stored"));
        }
    };

    let multipart = blob.size <= bot_api_limit(method) || deps.files.local_mode();
    let mut call = env.payload.clone();
    call.query = String::new();
    if multipart {
        let mut parts: Vec<Part> = params
            .iter()
            .filter(|(k, _)| k.as_str() != param)
            .map(|(k, v)| Part::Text {
                name: k.clone(),
                value: text(v),
            })
            .collect();
        parts.push(Part::File {
            name: param.to_owned(),
            file_name: Some(file_name),
            content_type,
            blob,
        });
        call.body = CallBody::Multipart { parts };
    } else {
        let Some(mtproto) = deps.files.mtproto() else {
            return Response::from_error(&ApiError::bad_request(
                "file is too big for the Bot API; set TELEGRAM_API_ID and TELEGRAM_API_HASH (or --upstream-local) to send it",
            ));
        };
        let reader = match deps.blobs.open(&blob).await {
            Ok(r) => r,
            Err(_) => return Response::from_error(&ApiError::internal("the file was lost")),
        };
        let stream = Box::pin(tokio_util::io::ReaderStream::with_capacity(
            reader,
            512 * 1024,
        ));
        let uploaded = match mtproto.upload(&token, stream, blob.size, &file_name).await {
            Ok(u) => u,
            Err(e) if e.is_bad_request() => {
                return Response::from_error(&ApiError::bad_request(e.to_string()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "MTProto upload failed");
                return Response::from_error(&ApiError::bad_gateway(e.to_string()));
            }
        };
        let media = NewMedia {
            photo: method == "sendPhoto",
            mime_type: content_type
                .filter(|c| c.parse::<mime::Mime>().is_ok())
                .unwrap_or_else(|| "application/octet-stream".into()),
            attributes: vec![tl::types::DocumentAttributeFilename { file_name }.into()],
            force_file: method == "sendDocument",
        };
        let stored = match mtproto.upload_media(&token, uploaded, media).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "uploadMedia failed");
                return Response::from_error(&ApiError::bad_gateway(e.to_string()));
            }
        };
        params.insert(param.to_owned(), Value::String(stored.file_id.encode()));
        call.body = CallBody::Json {
            value: Value::Object(params),
        };
    }
    let forwarded = Envelope {
        header: env.header.clone(),
        payload: call,
    };
    crate::passthrough::execute(deps, &forwarded).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_params() {
        assert_eq!(file_param("sendVideoNote"), Some("video_note"));
        assert_eq!(file_param("sendMessage"), None);
    }
}
