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
}
