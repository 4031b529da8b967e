//! What the targets share: one runtime, one sealer, one blob folder (spooled parts land there
//! and are removed again).

#![allow(dead_code)]

use std::sync::OnceLock;

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

pub fn sealer() -> &'static schemas::seal::Sealer {
    static S: OnceLock<schemas::seal::Sealer> = OnceLock::new();
    S.get_or_init(|| schemas::seal::Sealer::new(&schemas::seal::SealKey::generate()))
}

pub fn blobs() -> &'static store::blobs::LocalBlobs {
    static B: OnceLock<store::blobs::LocalBlobs> = OnceLock::new();
    B.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("telepipe-fuzz-{}", std::process::id()));
        store::blobs::LocalBlobs::open(&dir).expect("a blob folder")
    })
}

pub fn cfg() -> ingest::IngestConfig {
    ingest::IngestConfig {
        max_body: 1 << 20,
        max_upload: 1 << 20,
        max_text_part: 1 << 16,
        max_parts: 64,
        ..ingest::IngestConfig::default()
    }
}

/// Parses a request as the ingest does, and checks what it makes: the record encodes and
/// decodes to itself, the token mask goes out and comes back.
pub fn request(path: &str, query: &str, content_type: &[u8], body: Vec<u8>) {
    use schemas::{BotId, Call, CallBody, CallId, Envelope};
    let target = ingest::parse::target(path);
    let (fingerprint, token) = sealer().admit(&target.token);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    let parsed = rt().block_on(ingest::parse::body(
        &cfg(),
        blobs(),
        &headers,
        axum::body::Body::from(body),
        CallId::new(),
    ));
    let Ok(body) = parsed else { return };
    let call = Call {
        token: token.as_ref().map(|(_, s)| s.clone()),
        token_fingerprint: fingerprint,
        test_env: target.test_env,
        method: target.method,
        http_method: "POST".into(),
        query: query.to_owned(),
        body,
        deadline_ms: 0,
        rejected: None,
        staged: None,
    };
    let _ = ingest::parse::long_poll(&call);
    let _ = call.audit_params();
    let _ = call.encoding();
    let env = Envelope::new(CallId::new(), BotId(1), "fuzz", None, call.clone());
    let back = Envelope::<Call>::decode(&env.encode()).expect("a record decodes");
    assert_eq!(back.payload, call, "a record is what was encoded");
    if let Some((t, _)) = &token {
        if let Some((_, secret)) = t.expose().split_once(':') {
            let mark = sealer().token_mark(env.header.call_id);
            let mut masked = call.clone();
            schemas::mask::replace_in_call(&mut masked, secret, &mark);
            schemas::mask::replace_in_call(&mut masked, &mark, secret);
            assert_eq!(masked, call, "the mask comes back off");
        }
    }
    // Spooled parts are not kept between runs.
    if let CallBody::Multipart { parts } = &call.body {
        for p in parts {
            if let schemas::Part::File { blob, .. } = p {
                let _ = rt().block_on(store::blobs::Blobs::remove(blobs(), blob));
            }
        }
    }
}
