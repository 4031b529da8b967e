//! Where what goes wrong in a processor's work becomes the bot's answer.
//!
//! The errors of the crates below say what Bot API error they are beside their definitions
//! (`From<&UpstreamError>` and `From<&MtprotoError>` for [`ApiError`], in `telegram`). This
//! module adds what depends on the step that failed: a file that would not go into the blob
//! store is the URL's fault when it came from a URL, and upstream's when it came from Telegram;
//! a store that fails is the gateway's own 500. Each failure is logged here, once, at the level
//! it deserves. A handler says which step failed (`.map_err(failures::lost("the file"))?`) and
//! never picks a status; `?` makes the [`ApiError`] its answer (`From<ApiError> for Response`).

use fetch::FetchError;
use schemas::ApiError;
use std::fmt::Display;
use store::blobs::BlobError;
use telegram::botapi::UpstreamError;
use telegram::mtproto::MtprotoError;

/// Where the bytes being kept came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A URL the bot gave: its failures are the bot's 400s, as the Bot API words them.
    Url,
    /// Telegram, for a getFile or a re-upload: its failures are upstream's 502s.
    Telegram,
}

/// A URL that could not be fetched, in the Bot API's own words for it.
pub(crate) fn url(e: &FetchError) -> ApiError {
    tracing::info!(error = %e, "URL upload refused or failed");
    url_refused(e)
}

fn url_refused(e: &FetchError) -> ApiError {
    ApiError::bad_request(format!("failed to get HTTP URL content: {e}"))
}

/// A stream that could not be kept in the blob store.
pub(crate) fn not_kept(from: Origin) -> impl FnOnce(BlobError) -> ApiError {
    move |e| match (e, from) {
        (BlobError::TooLarge { limit }, Origin::Url) => {
            tracing::info!(limit, "a URL's file is over the limit");
            url_refused(&FetchError::TooLarge(limit))
        }
        (BlobError::TooLarge { .. }, Origin::Telegram) => ApiError::bad_request("file is too big"),
        (BlobError::Source(error), Origin::Url) => {
            tracing::info!(%error, "URL download broke off");
            url_refused(&FetchError::Failed)
        }
        (BlobError::Source(error), Origin::Telegram) => {
            tracing::warn!(%error, "the download broke off");
            ApiError::bad_gateway("the download broke off")
        }
        (error, _) => {
            tracing::error!(%error, "could not keep a file in the blob store");
            ApiError::internal("the file could not be stored")
        }
    }
}

/// A kept file (or body) that cannot be read back: the gateway's fault, never the bot's.
pub(crate) fn lost<E: Display>(what: &'static str) -> impl FnOnce(E) -> ApiError {
    move |error| {
        tracing::error!(%error, what, "a kept file cannot be read back");
        ApiError::internal(format!("{what} was lost"))
    }
}

/// The store failed at `what` (a sentence's end: "the webhook could not be kept").
pub(crate) fn store<E: Display>(what: &'static str) -> impl FnOnce(E) -> ApiError {
    move |error| {
        tracing::error!(%error, what, "the store failed");
        ApiError::internal(what)
    }
}

/// Upstream could not be asked, or did not answer, at `step` (a method's name: "getFile",
/// or "call" for the bot's own; a call that may have gone out is a 409, decided by the
/// passthrough).
pub(crate) fn upstream(step: &'static str) -> impl FnOnce(UpstreamError) -> ApiError {
    move |e| {
        tracing::warn!(error = %e, step, forwarded = e.forwarded(), "upstream call failed");
        ApiError::from(&e)
    }
}

/// Telegram refused, or could not be reached, over MTProto at `step` ("upload",
/// "download", "getMessage"). A refusal that is the bot's fault is logged at info.
pub(crate) fn mtproto(step: &'static str) -> impl FnOnce(MtprotoError) -> ApiError {
    move |e| {
        if e.is_bad_request() {
            tracing::info!(error = %e, step, "MTProto refused the bot's request");
        } else {
            tracing::warn!(error = %e, step, "MTProto failed");
        }
        ApiError::from(&e)
    }
}

/// What a method that needs MTProto answers without it.
pub(crate) fn needs_mtproto(method: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{method} needs MTProto: set TELEGRAM_API_ID and TELEGRAM_API_HASH (--api-id, --api-hash)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Response;

    fn io() -> std::io::Error {
        std::io::Error::other("reset")
    }

    /// The answers bots and tests match on stay as they were when each site made its own.
    #[test]
    fn each_failure_has_its_answer() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                url(&FetchError::Status(404)),
                400,
                "Bad Request: failed to get HTTP URL content: the URL answered HTTP 404",
            ),
            (
                not_kept(Origin::Url)(BlobError::TooLarge { limit: 7 }),
                400,
                "Bad Request: failed to get HTTP URL content: the file at the URL is larger than 7 bytes",
            ),
            (
                not_kept(Origin::Url)(BlobError::Source(io())),
                400,
                "Bad Request: failed to get HTTP URL content: fetching the URL failed",
            ),
            (
                not_kept(Origin::Telegram)(BlobError::TooLarge { limit: 7 }),
                400,
                "Bad Request: file is too big",
            ),
            (
                not_kept(Origin::Telegram)(BlobError::Source(io())),
                502,
                "Bad Gateway: the download broke off",
            ),
            (
                not_kept(Origin::Url)(BlobError::Io(io())),
                500,
                "Internal Server Error: the file could not be stored",
            ),
            (
                lost("the file")(BlobError::NotFound),
                500,
                "Internal Server Error: the file was lost",
            ),
            (
                store("the webhook could not be kept")("disk full"),
                500,
                "Internal Server Error: the webhook could not be kept",
            ),
            (
                upstream("call")(UpstreamError::Connect("refused".into())),
                502,
                "Bad Gateway: upstream is unreachable",
            ),
            (
                upstream("getFile")(UpstreamError::Timeout),
                504,
                "Gateway Timeout: upstream did not answer in time",
            ),
            (
                upstream("call")(UpstreamError::Answer("cut".into())),
                502,
                "Bad Gateway: upstream's answer broke off",
            ),
            (
                upstream("call")(UpstreamError::Request("body".into())),
                502,
                "Bad Gateway: the request to upstream failed",
            ),
            (
                mtproto("upload")(MtprotoError::Rpc {
                    code: 400,
                    name: "PEER_ID_INVALID".into(),
                }),
                400,
                "Bad Request: telegram answered 400 PEER_ID_INVALID",
            ),
            (
                mtproto("download")(MtprotoError::Other("gone".into())),
                502,
                "Bad Gateway: MTProto: gone",
            ),
            (
                mtproto("upload")(MtprotoError::NotConfigured),
                400,
                "Bad Request: MTProto is not configured (TELEGRAM_API_ID and TELEGRAM_API_HASH)",
            ),
        ];
        for (error, code, description) in cases {
            assert_eq!(
                (error.error_code, error.description.as_str()),
                (code, description)
            );
            let answer = Response::from(error);
            assert_eq!(answer.status, code);
            assert_eq!(answer.error_code(), Some(code as i64));
        }
    }
}
