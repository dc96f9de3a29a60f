//! cargo-fuzz target `meta_file`; the logic lives in
//! crates/ipcress/tests/fuzzing/mod.rs (also replayed by `cargo test`).
#![no_main]

#[path = "../../crates/ipcress/tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::meta_file(data));
