use super::*;
use crate::codec::Cipher;
use std::sync::atomic::{AtomicU32, Ordering};

fn temp_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "ipcress-codec-test-{}-{n}-{name}",
        std::process::id()
    ))
}

fn write_with_mode(path: &Path, data: &[u8], mode: u32) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .unwrap();
    f.write_all(data).unwrap();
}

fn same_key(a: &Key, b: &Key) -> bool {
    a.bytes == b.bytes
}

#[test]
fn key_debug_is_redacted() {
    let key = Key::from_bytes([0xAB; 32]);
    let dbg = format!("{key:?}");
    assert_eq!(dbg, "Key(<redacted>)");
    let dbg = format!("{:?}", Cipher::new(&key, [0; 16]));
    assert!(
        !dbg.contains("171") && !dbg.to_lowercase().contains("ab"),
        "{dbg}"
    );
}

#[test]
fn key_fingerprint() {
    let a = Key::from_bytes([1; 32]);
    let b = Key::from_bytes([2; 32]);
    let fa = a.fingerprint();
    assert_eq!(fa.len(), 8);
    assert!(fa.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(fa, Key::from_bytes([1; 32]).fingerprint());
    assert_ne!(fa, b.fingerprint());
    assert_ne!(fa, "01010101");
    let g1 = Key::generate().unwrap();
    let g2 = Key::generate().unwrap();
    assert!(!same_key(&g1, &g2));
    assert_ne!(g1.fingerprint(), g2.fingerprint());
}

#[test]
fn key_write_new_and_load() {
    let path = temp_path("new.key");
    let key = Key::write_new(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.len(), 32);
    let loaded = Key::load(&path).unwrap();
    assert!(same_key(&key, &loaded));
    // Refuses to overwrite, and leaves the file alone.
    match Key::write_new(&path) {
        Err(e @ KeyError::Exists { .. }) => {
            assert!(e.to_string().contains("already exists"), "{e}")
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert!(same_key(&key, &Key::load(&path).unwrap()));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn key_load_refuses_group_or_other_bits() {
    for mode in [0o644, 0o640, 0o604, 0o601, 0o610] {
        let path = temp_path("perm.key");
        write_with_mode(&path, &[7; 32], mode);
        match Key::load(&path) {
            Err(KeyError::Permissions { mode: m, path: p }) => {
                assert_eq!(m, mode);
                assert_eq!(p, path);
            }
            other => panic!("mode {mode:o}: expected Permissions, got {other:?}"),
        }
        std::fs::remove_file(&path).unwrap();
    }
    let path = temp_path("perm-ok.key");
    write_with_mode(&path, &[7; 32], 0o400);
    assert!(same_key(
        &Key::load(&path).unwrap(),
        &Key::from_bytes([7; 32])
    ));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn key_load_formats() {
    let raw: [u8; 32] = std::array::from_fn(|i| (i * 9 + 1) as u8);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    for (name, content) in [
        ("raw", raw.to_vec()),
        ("hex", hex.clone().into_bytes()),
        ("hexnl", format!("{hex}\n").into_bytes()),
        ("hexcrlf", format!("{hex}\r\n").into_bytes()),
        ("HEX", format!("{}\n", hex.to_uppercase()).into_bytes()),
    ] {
        let path = temp_path(name);
        write_with_mode(&path, &content, 0o600);
        let k = Key::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(same_key(&k, &Key::from_bytes(raw)), "{name}");
        std::fs::remove_file(&path).unwrap();
    }
    let mut bad_hex = hex.clone().into_bytes();
    bad_hex[10] = b'g';
    for (name, content, len) in [
        ("short", vec![1u8; 31], 31),
        ("long", vec![1u8; 33], 33),
        ("empty", vec![], 0),
        ("badhex", bad_hex, 64),
        ("twonl", format!("{hex}\n\n").into_bytes(), 66),
        ("huge", vec![b'a'; 10_000], 10_000),
    ] {
        let path = temp_path(name);
        write_with_mode(&path, &content, 0o600);
        match Key::load(&path) {
            Err(e @ KeyError::BadLength { .. }) => {
                let KeyError::BadLength { len: l, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(*l, len, "{name}");
                let msg = e.to_string();
                assert!(!msg.contains('\n') && msg.contains("32 raw bytes"), "{msg}");
            }
            other => panic!("{name}: expected BadLength, got {other:?}"),
        }
        std::fs::remove_file(&path).unwrap();
    }
    let missing = temp_path("missing");
    match Key::load(&missing) {
        Err(e @ KeyError::Io { .. }) => {
            assert!(e.to_string().contains(&*missing.to_string_lossy()))
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(matches!(
        Key::load(&std::env::temp_dir()),
        Err(KeyError::Io { .. } | KeyError::Permissions { .. })
    ));
}

// -- Cipher --------------------------------------------------------------
