//! A webhook's reply body: a method call in it (`{"method": ...}`) or nothing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((method, params)) = webhooks::reply_method(data) {
        assert!(!params.contains_key("method"));
        let _ = method.len();
    }
});
