//! Bot API-shaped errors: `{"ok":false,"error_code":N,"description":"..."}`, HTTP status = N.
//!
//! Every error the gateway makes itself goes through [`ApiError`], so clients that branch on
//! the status or read `parameters.retry_after` see what Telegram would have given them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_to_chat_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error_code} {description}")]
pub struct ApiError {
    pub error_code: u16,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<ResponseParameters>,
}

/// Why the gateway cannot say whether a call was executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownOutcome {
    /// Its processor stopped after recording the attempt (a redelivery found no outcome).
    Restarted,
    /// The connection to upstream broke after the call was sent.
    BrokeOff,
    /// Upstream did not answer before the call's deadline.
    Late,
    /// The ingest had no answer from the pipeline before the call's deadline.
    NoAnswer,
    /// The answer was kept but cannot be read back.
    AnswerLost,
    /// The bus never confirmed taking the call (it may have, and the call may run).
    Unconfirmed,
}

impl UnknownOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownOutcome::Restarted => "the gateway restarted while this call was in flight",
            UnknownOutcome::BrokeOff => "the connection to Telegram broke after this call was sent",
            UnknownOutcome::Late => "Telegram did not answer this call before its deadline",
            UnknownOutcome::NoAnswer => {
                "the gateway had no answer for this call before its deadline"
            }
            UnknownOutcome::AnswerLost => "the answer to this call was lost",
            UnknownOutcome::Unconfirmed => "the gateway could not confirm that it queued this call",
        }
    }
}

impl ApiError {
    pub fn new(error_code: u16, description: impl Into<String>) -> Self {
        Self {
            error_code,
            description: description.into(),
            parameters: None,
        }
    }

    pub fn bad_request(what: impl AsRef<str>) -> Self {
        Self::new(400, format!("Bad Request: {}", what.as_ref()))
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }

    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(405, "Method Not Allowed")
    }

    pub fn too_large() -> Self {
        Self::new(413, "Request Entity Too Large")
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        Self {
            error_code: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            parameters: Some(ResponseParameters {
                retry_after: Some(retry_after),
                ..Default::default()
            }),
        }
    }

    /// What is recorded for a call whose client went away while it waited in a flood control
    /// queue: it was not sent. Nobody reads it but the audit (nginx's 499, Client Closed
    /// Request, says the same in access logs).
    pub fn client_closed() -> Self {
        Self::new(
            499,
            "Client Closed Request: the client went away while the call waited its turn; it was not sent",
        )
    }

    /// The 409 of a call that may or may not have been executed (ENHANCED.md): never a 5xx,
    /// on which clients resend, and a message would go out twice.
    pub fn unknown_outcome(why: UnknownOutcome) -> Self {
        Self::new(
            409,
            format!(
                "Conflict: {}; it may or may not have been executed",
                why.as_str()
            ),
        )
    }

    pub fn internal(what: impl AsRef<str>) -> Self {
        Self::new(500, format!("Internal Server Error: {}", what.as_ref()))
    }

    pub fn bad_gateway(what: impl AsRef<str>) -> Self {
        Self::new(502, format!("Bad Gateway: {}", what.as_ref()))
    }

    pub fn unavailable(what: impl AsRef<str>) -> Self {
        Self::new(503, format!("Service Unavailable: {}", what.as_ref()))
    }

    pub fn gateway_timeout(what: impl AsRef<str>) -> Self {
        Self::new(504, format!("Gateway Timeout: {}", what.as_ref()))
    }

    /// The HTTP status to answer with; an out-of-range code becomes 500 rather than a panic.
    pub fn status(&self) -> u16 {
        if (400..=599).contains(&self.error_code) {
            self.error_code
        } else {
            500
        }
    }

    /// The JSON body, fields in the order Telegram writes them.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Shaped<'a> {
            ok: bool,
            error_code: u16,
            description: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            parameters: &'a Option<ResponseParameters>,
        }
        serde_json::to_vec(&Shaped {
            ok: false,
            error_code: self.error_code,
            description: &self.description,
            parameters: &self.parameters,
        })
        .expect("serialising plain data cannot fail")
    }
}

/// The one place an error becomes an HTTP answer, for every role that speaks HTTP (ingest,
/// egress, the gateway's own routes): the status of [`ApiError::status`], the JSON of
/// [`ApiError::to_json`].
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_like_telegram() {
        assert_eq!(
            String::from_utf8(ApiError::unauthorized().to_json()).unwrap(),
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#
        );
        assert_eq!(
            String::from_utf8(ApiError::too_many_requests(7).to_json()).unwrap(),
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#
        );
        assert_eq!(ApiError::new(200, "odd").status(), 500);
    }

    /// Every HTTP role answers through this: the error's status (500 for one out of range)
    /// and JSON, whatever the role.
    #[cfg(feature = "axum")]
    #[test]
    fn answers_http_with_its_status_and_json() {
        use axum::response::IntoResponse;
        for (error, status) in [
            (ApiError::too_many_requests(3), 429),
            (ApiError::not_found(), 404),
            (ApiError::new(200, "odd"), 500),
        ] {
            let answer = error.into_response();
            assert_eq!(answer.status().as_u16(), status);
            assert_eq!(
                answer.headers()[axum::http::header::CONTENT_TYPE],
                "application/json"
            );
        }
    }
}

#[cfg(test)]
mod unknown_outcome_tests {
    use super::*;

    /// The texts clients and tests match on (ENHANCED.md's 409s) stay as they were.
    #[test]
    fn unknown_outcomes_are_409s_that_say_so() {
        let e = ApiError::unknown_outcome(UnknownOutcome::Restarted);
        assert_eq!(e.error_code, 409);
        assert_eq!(
            e.description,
            "Conflict: the gateway restarted while this call was in flight; it may or may not have been executed"
        );
        for why in [
            UnknownOutcome::BrokeOff,
            UnknownOutcome::Late,
            UnknownOutcome::NoAnswer,
            UnknownOutcome::AnswerLost,
            UnknownOutcome::Unconfirmed,
        ] {
            let d = ApiError::unknown_outcome(why).description;
            assert!(
                d.starts_with("Conflict: ")
                    && d.ends_with("; it may or may not have been executed")
            );
        }
    }
}
