#![no_main]
//! The property is provision::fuzzing::account_files (also replayed by tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzzing::account_files(data));
