//! Test helpers shared by the codec tests.

/// Small deterministic PRNG (xorshift64*), so tests need no extra deps.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub(crate) fn log_like(lines: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..lines {
        s.push_str(&format!(
            "2024-05-01T12:{:02}:{:02}.{:03}Z INFO ipcress::producer: appended record \
             position={} len={} stream=orders\n",
            (i / 60) % 60,
            i % 60,
            (i * 7) % 1000,
            i,
            (i * 37) % 4096
        ));
    }
    s.into_bytes()
}
