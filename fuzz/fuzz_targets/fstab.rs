#![no_main]
//! The property is provision::fuzzing::fstab_file (also replayed by tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzzing::fstab_file(data));
