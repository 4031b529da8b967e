//! Files in the sandbox: storing uploads and URL fetches, issuing file ids in tdlib's format,
//! media objects, and `/file/bot<token>/<path>` downloads with Range, HEAD and ETag.

use crate::request::{split_path, valid_token, Upload};
use crate::world::{State, StoredFile};
use crate::{json_response, methods, Sandbox};
use axum::body::Body;
use futures_util::StreamExt;
use http::{header, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use telegram::file_id::{FileId, FileType};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

fn type_dir(t: FileType) -> &'static str {
    match t {
        FileType::Photo => "photos",
        FileType::Voice => "voice",
        FileType::Video => "videos",
        FileType::Sticker => "stickers",
        FileType::Audio => "music",
        FileType::Animation => "animations",
        FileType::VideoNote => "video_notes",
        _ => "documents",
    }
}

fn extension(file_name: Option<&str>, mime: Option<&str>, t: FileType) -> String {
    if let Some(ext) = file_name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return ext.to_ascii_lowercase();
    }
    match (mime, t) {
        (_, FileType::Photo) => "jpg".into(),
        (_, FileType::Voice) => "oga".into(),
        (_, FileType::VideoNote) | (_, FileType::Video) | (_, FileType::Animation) => "mp4".into(),
        (_, FileType::Sticker) => "webp".into(),
        (_, FileType::Audio) => "mp3".into(),
        _ => "bin".into(),
    }
}

/// Keeps an upload (moved from its temporary place) as a new file of `file_type`.
pub async fn store(
    sb: &Sandbox,
    upload: &Upload,
    file_type: FileType,
    attributes: Map<String, Value>,
) -> std::io::Result<StoredFile> {
    let (no, unique_id, file) = {
        let mut s = sb.world.lock();
        s.next_file += 1;
        let no = s.next_file;
        let fid = issue(
            file_type,
            Vec::new(),
            rand::random::<i64>().abs().max(1),
            rand::random(),
        );
        let mime = upload.content_type.clone().or_else(|| match file_type {
            FileType::Photo => Some("image/jpeg".into()),
            FileType::Voice => Some("audio/ogg".into()),
            FileType::Video | FileType::VideoNote | FileType::Animation => Some("video/mp4".into()),
            FileType::Audio => Some("audio/mpeg".into()),
            FileType::Sticker => Some("image/webp".into()),
            _ => Some("application/octet-stream".into()),
        });
        let official_path = format!(
            "{}/file_{no}.{}",
            type_dir(file_type),
            extension(upload.file_name.as_deref(), mime.as_deref(), file_type)
        );
        let file = StoredFile {
            unique_id: fid.unique_id(),
            id: fid.id().0,
            access_hash: fid.id().1,
            file_type,
            disk_path: sb.cfg.data_dir.join("files").join(no.to_string()),
            size: upload.size,
            sha256: upload.sha256.clone(),
            file_name: upload.file_name.clone(),
            mime_type: mime,
            official_path,
            attributes,
        };
        (no, file.unique_id.clone(), file)
    };
    let _ = no;
    tokio::fs::rename(&upload.path, &file.disk_path).await?;
    let mut s = sb.world.lock();
    s.by_path
        .insert(file.official_path.clone(), unique_id.clone());
    s.files.insert(unique_id, file.clone());
    Ok(file)
}

/// The sandbox's files live on DC 2; photos are issued as their `y` size.
fn issue(file_type: FileType, reference: Vec<u8>, id: i64, access_hash: i64) -> FileId {
    if file_type == FileType::Photo {
        FileId::photo(2, reference, id, access_hash, b'y')
    } else {
        FileId::common(file_type, 2, reference, id, access_hash)
    }
}

/// A file id for a stored file. Each issue carries a fresh file reference, as Telegram's do,
/// so two ids of one file differ while their file_unique_id is the same.
pub fn file_id(f: &StoredFile) -> String {
    let mut reference = vec![1u8];
    reference.extend_from_slice(&rand::random::<u32>().to_le_bytes());
    issue(f.file_type, reference, f.id, f.access_hash).encode()
}

/// The stored file a file id names, or the Bot API's complaint.
pub fn lookup(state: &State, file_id: &str) -> Result<StoredFile, String> {
    let fid = FileId::decode(file_id)
        .map_err(|_| "wrong file identifier/HTTP URL specified".to_owned())?;
    let f = state
        .files
        .get(&fid.unique_id())
        .filter(|f| (f.id, f.access_hash) == fid.id())
        .ok_or_else(|| "wrong file identifier/HTTP URL specified".to_owned())?;
    Ok(f.clone())
}

/// The attributes a send's parameters give a new file.
pub fn attributes(given: &Map<String, Value>) -> Map<String, Value> {
    [
        "width",
        "height",
        "duration",
        "length",
        "performer",
        "title",
    ]
    .iter()
    .filter_map(|k| Some((k.to_string(), given.get(*k)?.clone())))
    .collect()
}

/// The Bot API object for a file sent as `file_type`: the send's own values (`given`) first,
/// then what the file was uploaded with.
pub fn media_object(f: &StoredFile, given: &Map<String, Value>) -> Value {
    let id = file_id(f);
    let value = |k: &str| given.get(k).or_else(|| f.attributes.get(k));
    let num = |k: &str| match value(k) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    };
    let text = |k: &str| value(k).and_then(Value::as_str).map(str::to_owned);
    // Telegram names a type for every document it keeps.
    let mime = f
        .mime_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut v = match f.file_type {
        FileType::Photo => {
            return json!([{
                "file_id": id, "file_unique_id": f.unique_id, "file_size": f.size,
                "width": 800, "height": 600,
            }])
        }
        FileType::Video => json!({
            "width": num("width"), "height": num("height"), "duration": num("duration"),
            "file_name": f.file_name, "mime_type": mime,
        }),
        FileType::Animation => json!({
            "width": num("width"), "height": num("height"), "duration": num("duration"),
            "file_name": f.file_name, "mime_type": mime,
        }),
        FileType::Audio => json!({
            "duration": num("duration"), "performer": text("performer"),
            "title": text("title"), "file_name": f.file_name, "mime_type": mime,
        }),
        FileType::Voice => json!({"duration": num("duration"), "mime_type": mime}),
        FileType::VideoNote => json!({"length": num("length"), "duration": num("duration")}),
        FileType::Sticker => json!({
            "type": "regular", "width": 512, "height": 512,
            "is_animated": false, "is_video": false,
        }),
        _ => json!({"file_name": f.file_name, "mime_type": mime}),
    };
    if let Value::Object(m) = &mut v {
        m.retain(|_, v| !v.is_null());
        m.insert("file_id".into(), id.into());
        m.insert("file_unique_id".into(), f.unique_id.clone().into());
        m.insert("file_size".into(), f.size.into());
    }
    v
}

/// Fetches a URL into a temporary upload, at most `limit` bytes.
pub async fn fetch(sb: &Sandbox, url: &str, limit: u64) -> Result<Upload, String> {
    let resp = sb
        .http
        .get(url)
        .send()
        .await
        .map_err(|_| "failed to get HTTP URL content".to_owned())?;
    if !resp.status().is_success() {
        return Err("failed to get HTTP URL content".into());
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let file_name = url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let path = sb.temp_path();
    let mut f = tokio::fs::File::create(&path)
        .await
        .map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| "failed to get HTTP URL content".to_owned())?;
        size += chunk.len() as u64;
        if size > limit {
            drop(f);
            let _ = tokio::fs::remove_file(&path).await;
            return Err("wrong file identifier/HTTP URL specified".into());
        }
        h.update(&chunk);
        f.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    f.flush().await.map_err(|e| e.to_string())?;
    Ok(Upload {
        path,
        size,
        sha256: hex::encode(h.finalize()),
        file_name,
        content_type,
    })
}

/// A single `bytes=` range resolved against `size`: `Ok(None)` for no range header,
/// `Err(())` when it cannot be satisfied.
fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (s, e)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

pub async fn download(sb: &Sandbox, req: Request<Body>) -> Response<Body> {
    let Some((token, _test, path)) = split_path(req.uri().path(), "/file/bot") else {
        return json_response(StatusCode::NOT_FOUND, &methods::error(404, "Not Found"));
    };
    if valid_token(&token).is_none() {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &methods::error(401, "Unauthorized"),
        );
    }
    let file = {
        let s = sb.world.lock();
        s.by_path.get(&path).and_then(|u| s.files.get(u)).cloned()
    };
    let Some(file) = file else {
        return json_response(StatusCode::NOT_FOUND, &methods::error(404, "Not Found"));
    };
    let etag = format!("\"{}\"", &file.sha256[..32]);
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, &etag)
            .body(Body::empty())
            .expect("valid headers");
    }
    let range = parse_range(
        req.headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
        file.size,
    );
    let (status, start, len) = match range {
        Ok(None) => (StatusCode::OK, 0, file.size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Err(()) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", file.size))
                .body(Body::empty())
                .expect("valid headers")
        }
    };
    let mut b = Response::builder()
        .status(status)
        .header(
            header::CONTENT_TYPE,
            file.mime_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        )
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag);
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", start, start + len - 1, file.size),
        );
    }
    if req.method() == http::Method::HEAD {
        return b.body(Body::empty()).expect("valid headers");
    }
    let mut f = match tokio::fs::File::open(&file.disk_path).await {
        Ok(f) => f,
        Err(_) => return json_response(StatusCode::NOT_FOUND, &methods::error(404, "Not Found")),
    };
    if f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &methods::error(500, "Internal Server Error"),
        );
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f.take(len)));
    b.body(body).expect("valid headers")
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Err(()));
        assert_eq!(parse_range(Some("items=0-1"), 10), Err(()));
    }
}
