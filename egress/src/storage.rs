//! Serving a stored file from the blob store: `Range` (one range, 206/416), `HEAD`,
//! `ETag` (its sha256) with `If-None-Match` (304) and `If-Range`, `Content-Type`, and
//! `Content-Disposition` with the original name (RFC 6266/5987). The body streams from the
//! blob store; nothing holds the file.

use axum::body::Body;
use axum::response::IntoResponse;
use http::{header, HeaderMap, Method, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use schemas::ApiError;
use store::blobs::Blobs;
use store::FileRow;

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    Whole,
    /// Inclusive first and last byte.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; a multi-range or malformed header is ignored (the whole file is
/// served), as RFC 9110 allows.
pub fn parse_range(value: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) => return Wanted::Unsatisfiable,
            Ok(n) if size > 0 => (size.saturating_sub(n), size - 1),
            Ok(_) => return Wanted::Unsatisfiable,
            Err(_) => return Wanted::Whole,
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Wanted::Whole;
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                _ => return Wanted::Whole,
            }
        };
        if start >= size {
            return Wanted::Unsatisfiable;
        }
        (start, end)
    };
    Wanted::Part(range.0, range.1)
}

const FILENAME_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `inline; filename="..."; filename*=UTF-8''...`: an ASCII fallback for old clients, the
/// exact name for the rest. Quotes, backslashes, slashes and controls never reach the header.
pub fn content_disposition(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\\' | '/'))
        .collect();
    let ascii: String = clean
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    format!(
        "inline; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(&clean, FILENAME_ESCAPE)
    )
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
}

/// Serves a stored file as asked by `method` and `headers`.
pub async fn serve(
    blobs: &dyn Blobs,
    row: &FileRow,
    method: &Method,
    headers: &HeaderMap,
) -> Response<Body> {
    let head = method == Method::HEAD;
    if !head && method != Method::GET {
        return ApiError::method_not_allowed().into_response();
    }
    let size = row.blob.size;
    let etag = format!("\"{}\"", row.blob.sha256);
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if get(header::IF_NONE_MATCH).is_some_and(|v| etag_matches(v, &etag)) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, &etag)
            .body(Body::empty())
            .expect("valid headers");
    }
    // A range against another version of the file would splice two files: serve it whole.
    let range_applies = get(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let wanted = if range_applies {
        parse_range(get(header::RANGE), size)
    } else {
        Wanted::Whole
    };
    let (status, start, len) = match wanted {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Wanted::Unsatisfiable => {
            let mut refused = ApiError::new(416, "Requested Range Not Satisfiable").into_response();
            if let Ok(range) = format!("bytes */{size}").parse() {
                refused.headers_mut().insert(header::CONTENT_RANGE, range);
            }
            return refused;
        }
    };
    let mut b = Response::builder()
        .status(status)
        .header(
            header::CONTENT_TYPE,
            row.mime_type
                .as_deref()
                .filter(|m| m.parse::<mime::Mime>().is_ok())
                .unwrap_or("application/octet-stream"),
        )
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "private, max-age=86400");
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if let Some(name) = &row.file_name {
        b = b.header(header::CONTENT_DISPOSITION, content_disposition(name));
    }
    if head {
        return b.body(Body::empty()).expect("valid headers");
    }
    let chunks = match blobs.stream_range(&row.blob, start, len).await {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, path = %row.path, "a stored file is missing from the blob store");
            return ApiError::not_found().into_response();
        }
    };
    b.body(Body::from_stream(chunks))
        .unwrap_or_else(|_| ApiError::internal("bad headers").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Wanted::Whole);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Wanted::Part(0, 3));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Wanted::Part(4, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Wanted::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Wanted::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Wanted::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Wanted::Whole);
        assert_eq!(parse_range(Some("bytes=3-1"), 10), Wanted::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Wanted::Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn dispositions_are_safe() {
        assert_eq!(
            content_disposition("report.pdf"),
            "inline; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        let d = content_disposition("a\"b\r\n/../ü.txt");
        assert!(!d.contains('\r') && !d.contains('/') && !d.contains("a\"b"));
        assert!(d.ends_with("filename*=UTF-8''ab..%C3%BC.txt"), "{d}");
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"x\"", "\"x\""));
        assert!(etag_matches("\"y\", W/\"x\"", "\"x\""));
        assert!(etag_matches("*", "\"x\""));
        assert!(!etag_matches("\"y\"", "\"x\""));
    }
}
