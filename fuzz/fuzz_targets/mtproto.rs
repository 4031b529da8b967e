//! The sandbox's MTProto face: transport frames, then (past a valid key and msg_key, which
//! the fuzzer cannot forge) a decrypted message body of any TL function, container or gzip.
//! Input: first byte picks the layer; the rest is a frame stream or a message body.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

fn sandbox() -> &'static sandbox::Sandbox {
    static S: OnceLock<sandbox::Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("telepipe-fuzz-sb-{}", std::process::id()));
        sandbox::Sandbox::new(sandbox::SandboxConfig::new(dir)).expect("a sandbox")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&layer, rest)) = data.split_first() else {
        return;
    };
    if layer % 2 == 0 {
        let _ = sandbox::mtproto::decode_frames(sandbox(), rest);
    } else {
        common::rt().block_on(sandbox::mtproto::handle_body(sandbox(), rest.to_vec()));
    }
});
