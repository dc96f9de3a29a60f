//! Replays the checked-in seed corpus of every fuzz target (fuzz/corpus/)
//! through the same functions the cargo-fuzz targets call, on stable Rust.
//!
//! Regenerate the seeds (deterministic) with
//! `cargo test -p ipcress --test fuzz_corpus -- --ignored regenerate_seed_corpus`.

mod fuzzing;

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn replay(target: &str) {
    let (_, f) = fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .expect("known target");
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{target}: only {} seeds", files.len());
    for p in files {
        let bytes = std::fs::read(&p).unwrap();
        eprintln!("{target}: {}", p.display());
        f(&bytes);
    }
}

#[test]
fn frame_header_corpus() {
    replay("frame_header");
}

#[test]
fn meta_file_corpus() {
    replay("meta_file");
}

#[test]
fn ring_data_corpus() {
    replay("ring_data");
}

#[test]
fn codec_corpus() {
    replay("codec");
}

/// Short deterministic pseudo-random inputs on top of the seeds, so that a
/// plain `cargo test` also covers inputs nobody wrote down.
#[test]
fn random_inputs_never_panic() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (name, f) in fuzzing::TARGETS {
        let n = if *name == "ring_data" || *name == "meta_file" {
            40
        } else {
            2000
        };
        for _ in 0..n {
            let len = (next() % 600) as usize;
            let v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            f(&v);
        }
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn regenerate_seed_corpus() {
    let dir = corpus_dir();
    for (t, _) in fuzzing::TARGETS {
        let _ = std::fs::remove_dir_all(dir.join(t));
    }
    fuzzing::write_seed_corpus(&dir);
}
