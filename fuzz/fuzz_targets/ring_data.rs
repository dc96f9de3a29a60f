//! cargo-fuzz target `ring_data`; the logic lives in
//! crates/ipcress/tests/fuzzing/mod.rs (also replayed by `cargo test`).
#![no_main]

#[path = "../../crates/ipcress/tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::ring_data(data));
