//! The fetcher against a corpus of tricky URLs (each must be refused before any connection to
//! a private address), and against a local server standing in for a public one (127.0.0.2,
//! allowed by the policy) that redirects into private space.

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use fetch::{refused, FetchError, FetchPolicy, Fetcher};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::IpAddr;

const CORPUS: &[&str] = &[
    "http://127.0.0.1/",
    "http://127.0.0.1:22/",
    "http://127.1/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://127.000.000.001/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://localhost.localdomain/",
    "http://ip6-localhost/",
    "http://user:pass@127.0.0.1/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://240.0.0.1/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "ftp://example.com/file",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
    "javascript:alert(1)",
    "http://",
    "not a url",
];

#[tokio::test]
async fn the_corpus_is_refused() {
    let f = Fetcher::new(FetchPolicy::default());
    assert!(CORPUS.len() >= 30);
    for url in CORPUS {
        match f.open(url).await {
            Err(FetchError::Refused { .. } | FetchError::Scheme | FetchError::BadUrl) => {}
            // A name the machine cannot resolve is not fetched either (hosts files differ).
            Err(FetchError::Unresolved) if url.contains("localhost") => {}
            Err(other) => panic!("{url}: refused for the wrong reason: {other}"),
            Ok(_) => panic!("{url}: fetched"),
        }
    }
    // Names that resolve to loopback are refused for what they resolve to.
    for url in ["http://localhost/", "http://LOCALHOST./"] {
        assert!(
            matches!(f.open(url).await, Err(FetchError::Refused { .. })),
            "{url}"
        );
    }
}

#[test]
fn addresses_are_classified() {
    let public: &[&str] = &["8.8.8.8", "1.1.1.1", "2a00:1450:4001::1", "2606:4700::1111"];
    for a in public {
        assert_eq!(refused(a.parse::<IpAddr>().unwrap()), None, "{a}");
    }
    for a in [
        "127.0.0.2",
        "10.1.2.3",
        "::ffff:192.168.0.1",
        "2001:db8::1",
        "2001::1",
    ] {
        assert!(refused(a.parse::<IpAddr>().unwrap()).is_some(), "{a}");
    }
}

/// A stand-in for a public server on 127.0.0.2 (allowed by the test policy).
async fn server() -> String {
    let app =
        Router::new()
            .route("/file.bin", get(|| async { "the file content" }))
            .route(
                "/named",
                get(|| async {
                    (
                        [(
                            "content-disposition",
                            "attachment; filename*=UTF-8''na%C3%AFve.txt",
                        )],
                        "x",
                    )
                }),
            )
            .route(
                "/to",
                get(|Query(q): Query<HashMap<String, String>>| async move {
                    Redirect::temporary(&q["url"])
                }),
            )
            .route(
                "/loop/{n}",
                get(|Path(n): Path<u32>| async move {
                    Redirect::temporary(&format!("/loop/{}", n + 1))
                }),
            )
            .route(
                "/big",
                get(|| async { ([("content-length", "5000")], vec![0u8; 5000]).into_response() }),
            )
            .route(
                "/chunked",
                get(|| async {
                    axum::body::Body::from_stream(futures_util::stream::iter(
                        (0..10)
                            .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 1000]))),
                    ))
                }),
            )
            .route(
                "/missing",
                get(|| async { (axum::http::StatusCode::NOT_FOUND, "no") }),
            );
    let l = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

fn policy() -> FetchPolicy {
    FetchPolicy {
        allowed: vec![("127.0.0.2".parse().unwrap(), 32)],
        max_size: 3000,
        ..Default::default()
    }
}

async fn body(f: fetch::Fetched) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    let mut b = f.body;
    while let Some(c) = b.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

#[tokio::test]
async fn public_fetches_work_and_redirects_into_private_space_do_not() {
    let base = server().await;
    let f = Fetcher::new(policy());
    let ok = f.open(&format!("{base}/file.bin")).await.unwrap();
    assert_eq!(ok.file_name.as_deref(), Some("file.bin"));
    assert_eq!(body(ok).await.unwrap(), b"the file content");
    let named = f.open(&format!("{base}/named")).await.unwrap();
    assert_eq!(named.file_name.as_deref(), Some("naïve.txt"));

    let port = base.rsplit(':').next().unwrap();
    for target in [
        format!("http://127.0.0.1:{port}/file.bin"),
        format!("http://localhost:{port}/file.bin"),
        format!("http://[::ffff:127.0.0.1]:{port}/file.bin"),
        "http://169.254.169.254/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let url = format!("{base}/to?url={}", urlencode(&target));
        match f.open(&url).await {
            Err(FetchError::Refused { .. } | FetchError::Scheme) => {}
            Err(other) => panic!("redirect to {target}: wrong refusal: {other}"),
            Ok(_) => panic!("redirect to {target}: followed"),
        }
    }
    assert!(matches!(
        f.open(&format!("{base}/loop/0")).await,
        Err(FetchError::Redirects(5))
    ));
    assert!(matches!(
        f.open(&format!("{base}/big")).await,
        Err(FetchError::TooLarge(3000))
    ));
    let chunked = f.open(&format!("{base}/chunked")).await.unwrap();
    assert!(
        body(chunked).await.is_err(),
        "the limit holds while streaming"
    );
    assert!(matches!(
        f.open(&format!("{base}/missing")).await,
        Err(FetchError::Status(404))
    ));
    // With private URLs allowed (tests, trusted deployments), loopback is fine.
    let open = Fetcher::new(FetchPolicy {
        allow_private: true,
        ..Default::default()
    });
    let local = open
        .open(&format!("http://127.0.0.1:{port}/file.bin"))
        .await;
    // 127.0.0.1:port is not where the server listens (127.0.0.2): refused by the OS, not us.
    assert!(!matches!(local, Err(FetchError::Refused { .. })));
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
