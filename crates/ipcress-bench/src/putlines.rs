//! `ipcress-bench put-lines`: the `ipcress put --lines` command into a plain
//! stream and into an encrypted one, side by side.
//!
//! Makes a file of log lines (default 1 M lines, 80 to 114 bytes each with
//! the newline, about 98 on average), creates two ring streams in a /dev/shm
//! temp directory (large enough to hold every record, nobody subscribed, so
//! the producer never waits) and a `0600` key file, then runs the `ipcress`
//! binary (`put NAME --lines FILE`, plus `--key` on the encrypted side) under
//! `/usr/bin/time`, alternating which side goes first, and reports the wall
//! and CPU (user + system) time of each put, median of the reps, and the
//! ratio of the two speeds. The stream's tail is checked after each put: the
//! same record count on both sides, each record's frame as large as its
//! line (plus the tag when encrypted).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use ipcress::{Key, Stream, StreamOptions};
use serde::Serialize;
use serde_json::json;

use crate::compare::median;
use crate::harness::TempDir;
use crate::{Flags, parse_size, report};

pub struct Opts {
    lines: u64,
    reps: usize,
    ipcress: PathBuf,
    out: PathBuf,
}

pub fn opts(args: &[String]) -> Result<Opts> {
    let f = Flags { args };
    f.check(&[], &["--lines", "--reps", "--ipcress", "--out"])?;
    let lines = f
        .value("--lines")?
        .map(parse_size)
        .transpose()?
        .unwrap_or(1_000_000);
    let reps = f.value("--reps")?.map(str::parse).transpose()?.unwrap_or(5);
    ensure!(
        lines >= 1 && reps >= 1,
        "--lines and --reps must be positive"
    );
    let ipcress = match f.value("--ipcress")? {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for the bench binary")?
            .join("ipcress"),
    };
    ensure!(
        ipcress.is_file(),
        "{} not found: build it (cargo build --release -p ipcress-cli) or pass --ipcress PATH",
        ipcress.display()
    );
    Ok(Opts {
        lines,
        reps,
        ipcress,
        out: f
            .value("--out")?
            .map_or_else(|| PathBuf::from("target/bench"), PathBuf::from),
    })
}

/// `n` log lines of 80 to 114 bytes each, newline included.
fn lines(n: u64) -> Vec<u8> {
    let text = crate::codecs::log_lines(8 << 20);
    let mut out = Vec::with_capacity(n as usize * 100);
    let mut at = 0usize;
    let mut x = 0x5eed_u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 79 + (x % 35) as usize;
        if at + len > text.len() {
            at = 0;
        }
        out.extend(
            text[at..at + len]
                .iter()
                .map(|&b| if b == b'\n' { b' ' } else { b }),
        );
        out.push(b'\n');
        at += len;
    }
    out
}

#[derive(Clone, Debug, Serialize)]
struct Run {
    encrypted: bool,
    wall_secs: f64,
    cpu_secs: f64,
    user_secs: f64,
    sys_secs: f64,
}

fn put(opts: &Opts, root: &Path, name: &str, file: &Path, key: Option<&Path>) -> Result<Run> {
    let times = root.join(format!("{name}.time"));
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%e %U %S")
        .arg("-o")
        .arg(&times)
        .arg(&opts.ipcress)
        .args(["put", name, "--lines"])
        .arg(file)
        .env("IPCRESS_DIR", root)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    let t = Instant::now();
    let status = cmd.status().context("run /usr/bin/time ipcress put")?;
    let wall = t.elapsed().as_secs_f64();
    ensure!(status.success(), "ipcress put {name} exited with {status}");
    let text = std::fs::read_to_string(&times)?;
    let f: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("time output {text:?}"))?;
    ensure!(f.len() == 3, "time output {text:?}");
    Ok(Run {
        encrypted: key.is_some(),
        wall_secs: wall,
        cpu_secs: f[1] + f[2],
        user_secs: f[1],
        sys_secs: f[2],
    })
}

pub fn run(opts: &Opts) -> Result<()> {
    let dir = TempDir::new()?;
    let data = lines(opts.lines);
    let file = dir.path().join("lines.txt");
    std::fs::write(&file, &data)?;
    let key = dir.path().join("key");
    Key::write_new(&key)?;
    // Every frame: 16-byte header + line (no newline) + tag, 8-aligned.
    let ring = ((data.len() as u64 + opts.lines * 40) * 2)
        .next_power_of_two()
        .max(16 << 20);
    let mut runs: Vec<Run> = Vec::new();
    for rep in 0..opts.reps {
        let order = if rep % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut tails = [0u64; 2];
        for enc in order {
            let name = format!("put-{}-{rep}", if enc { "enc" } else { "plain" });
            Stream::create_in(dir.path(), &name, &StreamOptions::ring(ring).encrypted(enc))?;
            let r = put(opts, dir.path(), &name, &file, enc.then_some(key.as_path()))?;
            let s = Stream::open_in(dir.path(), &name)?;
            tails[enc as usize] = s.tail();
            eprintln!(
                "rep {}/{} {:9} wall {:.3} s cpu {:.2} s",
                rep + 1,
                opts.reps,
                if enc { "encrypted" } else { "plain" },
                r.wall_secs,
                r.cpu_secs
            );
            drop(s);
            Stream::remove_in(dir.path(), &name)?;
            runs.push(r);
        }
        // The tags alone tell the tails apart (at most 7 bytes of alignment
        // per record either way).
        let extra = tails[1].saturating_sub(tails[0]);
        ensure!(
            extra >= opts.lines * 9 && extra <= opts.lines * 23,
            "tails {tails:?} do not differ by one tag per record"
        );
    }
    let pick = |enc: bool, f: fn(&Run) -> f64| {
        median(
            &runs
                .iter()
                .filter(|r| r.encrypted == enc)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    let (pw, ew) = (pick(false, |r| r.wall_secs), pick(true, |r| r.wall_secs));
    let (pc, ec) = (pick(false, |r| r.cpu_secs), pick(true, |r| r.cpu_secs));
    let mean_line = data.len() as f64 / opts.lines as f64;
    let mut s = format!(
        "## ipcress-bench put-lines (median of {} reps, {} lines of {:.1} B on average, {} CPUs)\n\n\
         | stream | wall s ↓ | CPU s (user + sys) ↓ | M lines/s ↑ | ns CPU per line ↓ |\n\
         |---|---:|---:|---:|---:|\n",
        opts.reps,
        opts.lines,
        mean_line,
        report::cpus()
    );
    for (what, w, c) in [("plain", pw, pc), ("encrypted", ew, ec)] {
        s.push_str(&format!(
            "| {what} | {w:.3} | {c:.2} | {:.2} | {:.0} |\n",
            opts.lines as f64 / w / 1e6,
            c * 1e9 / opts.lines as f64
        ));
    }
    let ratio = pw / ew;
    s.push_str(&format!(
        "\nencrypted speed ÷ plain speed (wall): {ratio:.2}× (target ≥ 0.4×: {}); by CPU time: {:.2}×\n",
        if ratio >= 0.4 { "met" } else { "MISSED" },
        pc / ec
    ));
    println!("{s}");
    let doc = json!({
        "lines": opts.lines,
        "bytes": data.len(),
        "reps": opts.reps,
        "cpus": report::cpus(),
        "kernel": report::kernel(),
        "ipcress": opts.ipcress,
        "runs": runs,
        "ratio_wall": ratio,
        "ratio_cpu": pc / ec,
    });
    let path = report::write_out(
        &opts.out,
        "put-lines.json",
        serde_json::to_string_pretty(&doc)?,
    )?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_log_lines_of_about_97_bytes() {
        let data = super::lines(10_000);
        let text = String::from_utf8(data).unwrap();
        let lens: Vec<usize> = text.lines().map(|l| l.len() + 1).collect();
        assert_eq!(lens.len(), 10_000);
        assert!(lens.iter().all(|l| (80..=114).contains(l)));
        let mean = text.len() as f64 / 10_000.0;
        assert!((94.0..=101.0).contains(&mean), "{mean}");
    }
}
