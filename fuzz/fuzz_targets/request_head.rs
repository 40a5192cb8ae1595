//! The event-stream connection's request-head parser (`http::bare`): any
//! bytes from the network are a request, "wait for more", or a 400/431 —
//! never a panic, and never a request with a body (it would be left unread).
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::http::bare::parse_head;

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Ok(Some(request)) => {
            let headers = request.headers();
            assert!(
                !headers.contains_key("transfer-encoding"),
                "a chunked body was accepted"
            );
            for length in headers.get_all("content-length") {
                assert_eq!(length.as_bytes(), b"0", "a body was accepted");
            }
            assert!(!request.method().as_str().is_empty());
        }
        Ok(None) => {}
        Err((status, why)) => {
            assert!(status == 400 || status == 431, "status {status}");
            assert!(!why.is_empty());
        }
    }
});
