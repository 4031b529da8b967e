//! Multipart bodies with the upload spooling: file parts stream into the blob folder.
//! Input: the body; the boundary is `XyZ`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::request(
        "/bot123456:AAsandbox1e240xxxxxxxxxxxxxxxxxxxxxx/sendDocument",
        "",
        b"multipart/form-data; boundary=XyZ",
        data.to_vec(),
    );
});
