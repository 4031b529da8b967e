//! Golden files pin the wire format of bus records: a change that alters them is a schema
//! change and needs a new version (or a deliberate update of the golden file).

use schemas::*;
use serde_json::{json, Value};
use std::str::FromStr;

fn header(kind: RecordKind, reply_to: Option<&str>) -> Header {
    Header {
        schema: SCHEMA_VERSION,
        kind,
        call_id: CallId::from_str("0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b").unwrap(),
        bot_id: BotId(123456789),
        producer: "ingest/a1".into(),
        time_ms: 1_764_000_000_000,
        reply_to: reply_to.map(str::to_owned),
    }
}

fn golden(name: &str) -> Value {
    let path = format!("{}/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn call_v1() -> Envelope<Call> {
    Envelope {
        header: header(RecordKind::Call, Some("responses.a1")),
        payload: Call {
            token: Some(SealedToken("c2VhbGVk".into())),
            token_fingerprint: TokenFingerprint("00112233445566778899aabb".into()),
            test_env: false,
            method: "sendDocument".into(),
            http_method: "POST".into(),
            query: "chat_id=42".into(),
            body: CallBody::Multipart {
                parts: vec![
                    Part::Text {
                        name: "caption".into(),
                        value: "hello".into(),
                    },
                    Part::File {
                        name: "document".into(),
                        file_name: Some("a.txt".into()),
                        content_type: Some("text/plain".into()),
                        blob: BlobRef {
                            sha256: "ab".repeat(32),
                            size: 5,
                            key: format!("sha256/ab/ab/{}", "ab".repeat(32)),
                        },
                    },
                ],
            },
            deadline_ms: 1_764_000_060_000,
            rejected: None,
        },
    }
}

fn response_v1() -> Envelope<Response> {
    Envelope {
        header: header(RecordKind::Response, None),
        payload: Response {
            status: 200,
            content_type: Some("application/json".into()),
            body: BodyBytes::Utf8 {
                text: r#"{"ok":true,"result":true}"#.into(),
            },
            origin: Origin::Upstream,
            stages: Stages {
                queue_ms: 1,
                upstream_ms: 12,
            },
        },
    }
}

/// The encoded records equal the golden files, and the golden files decode to the records.
#[test]
fn records_match_golden_files() {
    let call = call_v1();
    assert_eq!(serde_json::to_value(&call).unwrap(), golden("call_v1.json"));
    let bytes = serde_json::to_vec(&golden("call_v1.json")).unwrap();
    assert_eq!(Envelope::<Call>::decode(&bytes).unwrap(), call);

    let resp = response_v1();
    assert_eq!(
        serde_json::to_value(&resp).unwrap(),
        golden("response_v1.json")
    );
    let bytes = serde_json::to_vec(&golden("response_v1.json")).unwrap();
    assert_eq!(Envelope::<Response>::decode(&bytes).unwrap(), resp);
}

/// A record of an unknown version or of the wrong kind is refused, not guessed at.
#[test]
fn unknown_versions_and_kinds_are_refused() {
    let mut v = golden("call_v1.json");
    v["header"]["schema"] = json!(2);
    let bytes = serde_json::to_vec(&v).unwrap();
    assert!(matches!(
        Envelope::<Call>::decode(&bytes),
        Err(DecodeError::UnknownVersion(2))
    ));
    let bytes = serde_json::to_vec(&golden("call_v1.json")).unwrap();
    assert!(matches!(
        Envelope::<Response>::decode(&bytes),
        Err(DecodeError::WrongKind { .. })
    ));
    assert!(Envelope::<Call>::decode(b"not json").is_err());
}

/// The merged parameter view: query first, body wins, files described, secrets redacted.
#[test]
fn params_merge_query_and_body() {
    let mut call = call_v1().payload;
    call.query = "chat_id=1&caption=from_query&secret_token=s3".into();
    let p = call.audit_params();
    assert_eq!(p["chat_id"], json!("1"));
    assert_eq!(p["caption"], json!("hello"));
    assert_eq!(p["secret_token"], json!("<redacted>"));
    assert_eq!(p["document"]["file"]["size"], json!(5));
    assert_eq!(call.blobs().len(), 1);
}
