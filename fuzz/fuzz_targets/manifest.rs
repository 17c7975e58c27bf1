#![no_main]
//! The property is provision::fuzzing::manifest_text (also replayed by tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzzing::manifest_text(data));
