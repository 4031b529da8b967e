//! Golden files pin the wire format of bus records: a change that alters them is a schema
//! change and needs a new version (or a deliberate update of the golden file).

use schemas::*;
use serde_json::{json, Value};
use std::str::FromStr;

fn header(schema: u16, kind: RecordKind, reply_to: Option<&str>) -> Header {
    Header {
        schema,
        kind,
        call_id: CallId::from_str("0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b").unwrap(),
        bot_id: BotId(123456789),
        producer: "ingest/a1".into(),
        time_ms: 1_764_000_000_000,
        reply_to: reply_to.map(str::to_owned),
        flood_place: false,
    }
}

fn golden(name: &str) -> Value {
    let path = format!("{}/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn call(schema: u16) -> Envelope<Call> {
    Envelope {
        header: header(schema, RecordKind::Call, Some("responses.a1")),
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
            staged: None,
        },
    }
}

fn response(schema: u16, body: BodyBytes) -> Envelope<Response> {
    Envelope {
        header: header(schema, RecordKind::Response, None),
        payload: Response {
            status: 200,
            content_type: Some("application/json".into()),
            body,
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
    let c = call(SCHEMA_VERSION);
    assert_eq!(serde_json::to_value(&c).unwrap(), golden("call_v2.json"));
    let bytes = serde_json::to_vec(&golden("call_v2.json")).unwrap();
    assert_eq!(Envelope::<Call>::decode(&bytes).unwrap(), c);

    // Answers that are JSON are kept as JSON (version 2).
    let answer = br#"{"ok":true,"result":true}"#;
    let r = response(SCHEMA_VERSION, BodyBytes::inline(answer));
    assert!(matches!(r.payload.body, BodyBytes::Json { .. }));
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        golden("response_v2.json")
    );
    let bytes = serde_json::to_vec(&golden("response_v2.json")).unwrap();
    let back = Envelope::<Response>::decode(&bytes).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.payload.body.inline_bytes().unwrap().as_ref(), answer);
}

/// Records written by version 1 still read, as they were.
#[test]
fn version_1_records_still_read() {
    let bytes = serde_json::to_vec(&golden("call_v1.json")).unwrap();
    assert_eq!(Envelope::<Call>::decode(&bytes).unwrap(), call(1));
    let v1 = response(
        1,
        BodyBytes::Utf8 {
            text: r#"{"ok":true,"result":true}"#.into(),
        },
    );
    assert_eq!(
        serde_json::to_value(&v1).unwrap(),
        golden("response_v1.json")
    );
    let bytes = serde_json::to_vec(&golden("response_v1.json")).unwrap();
    assert_eq!(Envelope::<Response>::decode(&bytes).unwrap(), v1);
}

/// A record of an unknown version or of the wrong kind is refused, not guessed at.
#[test]
fn unknown_versions_and_kinds_are_refused() {
    for unknown in [0, SCHEMA_VERSION + 1] {
        let mut v = golden("call_v2.json");
        v["header"]["schema"] = json!(unknown);
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Envelope::<Call>::decode(&bytes),
            Err(DecodeError::UnknownVersion(n)) if n == unknown
        ));
    }
    let bytes = serde_json::to_vec(&golden("call_v2.json")).unwrap();
    assert!(matches!(
        Envelope::<Response>::decode(&bytes),
        Err(DecodeError::WrongKind { .. })
    ));
    assert!(Envelope::<Call>::decode(b"not json").is_err());
}

/// The merged parameter view: query first, body wins, files described, secrets redacted.
#[test]
fn params_merge_query_and_body() {
    let mut call = call(SCHEMA_VERSION).payload;
    call.query = "chat_id=1&caption=from_query&secret_token=s3".into();
    let p = call.audit_params();
    assert_eq!(p["chat_id"], json!("1"));
    assert_eq!(p["caption"], json!("hello"));
    assert_eq!(p["secret_token"], json!("<redacted>"));
    assert_eq!(p["document"]["file"]["size"], json!(5));
    assert_eq!(call.blobs().len(), 1);
}

/// A JSON body's numbers come off the bus as they went on: a number past the integers
/// (found by the request fuzzer: `1.1111111151111113e57` came back as `...111e57` before
/// floats were parsed exactly) and decimals with every digit a double holds.
#[test]
fn numbers_survive_the_bus_exactly() {
    let big = format!("1111111115{}0", "1".repeat(47));
    let body = format!(
        r#"{{"chat_id":{big},"latitude":55.75582600000001,"longitude":-0.1,"x":5e-324,"y":1.7976931348623157e308}}"#
    );
    let value: Value = serde_json::from_str(&body).unwrap();
    let mut env = call(2);
    env.payload.body = CallBody::Json {
        value: value.clone(),
    };
    let back = Envelope::<Call>::decode(&env.encode()).unwrap();
    assert_eq!(back, env);
    // And what goes upstream parses to the very numbers the bot sent.
    let CallBody::Json { value: sent } = &back.payload.body else {
        panic!("a JSON body");
    };
    let again: Value = serde_json::from_slice(&serde_json::to_vec(sent).unwrap()).unwrap();
    assert_eq!(again, value);
}
