//! The request parser: path (token, test environment, method), query, and a body of any
//! content type. Input: `path\nquery\ncontent-type\nbody`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut it = data.splitn(4, |b| *b == b'\n');
    let path = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    let query = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
    let content_type = it.next().unwrap_or_default().to_vec();
    let body = it.next().unwrap_or_default().to_vec();
    common::request(&path, &query, &content_type, body);
});
