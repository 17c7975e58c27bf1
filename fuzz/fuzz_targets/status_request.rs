#![no_main]
//! The property is provision::fuzzing::status_request (also replayed by tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzzing::status_request(data));
