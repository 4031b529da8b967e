//! The file_id codec: any text decodes or is refused; what decodes encodes (in this build's
//! version) to a file_id that decodes and encodes to the same text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = telegram::file_id::FileId::decode(text) {
        let encoded = id.encode();
        let again = telegram::file_id::FileId::decode(&encoded).expect("an encoded id decodes");
        assert_eq!(again.encode(), encoded);
        assert_eq!(again.location, id.location);
        let _ = id.id();
    }
});
