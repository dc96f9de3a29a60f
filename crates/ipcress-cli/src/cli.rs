//! The command line: every subcommand and option (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipcress::Compression;

use crate::framing::Framing;
use crate::units::{
    Retain, parse_age, parse_from, parse_mode, parse_name, parse_record_size, parse_retain,
    parse_size,
};

/// Streams of data between processes through shared memory.
#[derive(Parser, Debug)]
#[command(name = "ipcress", version, about, max_term_width = 100)]
pub struct Cli {
    /// Root directory of the streams [default: /dev/shm/ipcress]
    #[arg(long, global = true, env = "IPCRESS_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a stream (a ring by default)
    Create(CreateArgs),
    /// List the streams
    Ls(LsArgs),
    /// Remove a stream, or one of its durable consumers or groups
    Rm(RmArgs),
    /// Show a stream's positions, rates and consumers
    Stat(StatArgs),
    /// Append records from files or stdin
    Put(PutArgs),
    /// Write records to stdout
    Get(GetArgs),
    /// Run a program as a stage from one stream to another
    Exec(ExecArgs),
    /// Live view of all streams (q or Esc quits)
    Top(TopArgs),
    /// Write a new random key file (mode 0600) and print its fingerprint
    Keygen(KeygenArgs),
    /// Carry a stream through NATS JetStream (out: publish, in: append)
    Bridge(crate::bridge::BridgeArgs),
    /// Run a multi-process log pipeline on a temporary root and report
    Demo(DemoArgs),
    /// Print a shell completion script (e.g. `ipcress completions bash >
    /// /etc/bash_completion.d/ipcress`)
    Completions(CompletionsArgs),
    /// Print the manual page (`ipcress man | man -l -`), or write one page
    /// per command into a directory
    Man(ManArgs),
    #[command(hide = true)]
    DemoStage(DemoStageArgs),
}

fn name_arg(s: &str) -> Result<String, String> {
    parse_name(s)
}

#[derive(ValueEnum, Clone, Copy, Debug, Default)]
pub enum PolicyArg {
    /// Producers wait for holding consumers; nothing is lost
    #[default]
    Block,
    /// Producers never wait; lapped consumers skip ahead
    Overwrite,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default)]
pub enum ChecksumArg {
    /// CRC-32C per record
    #[default]
    Crc32c,
    /// No checksum
    None,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Stream name ([A-Za-z0-9._-], 1 to 128 characters)
    #[arg(value_parser = name_arg)]
    pub name: String,
    /// A ring of SIZE bytes (a power of two) [default: 64M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "log")]
    pub ring: Option<u64>,
    /// A log: one file per segment, dropped by retention
    #[arg(long)]
    pub log: bool,
    /// Segment size of a log (a power of two, 4K to 1G) [default: 64M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "log")]
    pub segment: Option<u64>,
    /// Log retention: a size (1G) or an age (10m, 2h, 7d); may be repeated
    #[arg(long, value_name = "SIZE|AGE", value_parser = parse_retain, requires = "log")]
    pub retain: Vec<Retain>,
    /// Number of segments of a ring (a power of two) [default: 4]
    #[arg(long, value_name = "N", conflicts_with = "log")]
    pub segments: Option<u32>,
    /// What producers do when the ring is full
    #[arg(long, value_enum, default_value_t)]
    pub policy: PolicyArg,
    /// Per-record checksum
    #[arg(long, value_enum, default_value_t)]
    pub checksum: ChecksumArg,
    /// Compression: none, lz4, zstd or zstd:LEVEL (1 to 22)
    #[arg(long, value_name = "CODEC", default_value = "none", value_parser = parse_compression)]
    pub compress: Compression,
    /// Encrypt records; the key file is checked now and needed to read and write
    #[arg(long, value_name = "FILE")]
    pub encrypt_key: Option<PathBuf>,
    /// File mode of the stream's files: 0600, or 0660/0640 to share with the group
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<u32>,
    /// A dead durable consumer stops holding producers back after this age
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub durable_timeout: Option<Duration>,
    /// Format version: 4 (records carry their commit time) or 3 (readable by older ipcress)
    #[arg(long, value_name = "N", default_value_t = ipcress::format::VERSION, value_parser = clap::value_parser!(u32).range(3..=4))]
    pub format_version: u32,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
        .map_err(|e: ipcress::codec::ParseCompressionError| e.to_string())
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print a JSON array of {name, layout, capacity_bytes, segment_bytes, head, tail, consumers}
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Stream name
    #[arg(value_parser = name_arg)]
    pub name: String,
    /// Remove only this durable consumer or group of the stream
    #[arg(long, value_name = "C", value_parser = name_arg)]
    pub consumer: Option<String>,
    /// Remove the stream even while processes use it: each of them stops
    /// with "stream NAME was removed" at its next wait
    #[arg(long, conflicts_with = "consumer")]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct StatArgs {
    /// Stream name (all streams if omitted)
    #[arg(value_parser = name_arg)]
    pub name: Option<String>,
    /// JSON output (fields documented in docs/CLI.md)
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Prometheus text exposition format
    #[arg(long)]
    pub prometheus: bool,
    /// Serve the Prometheus metrics over HTTP at ADDR (`127.0.0.1:9464`;
    /// GET /metrics) until SIGINT/SIGTERM
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["json", "prometheus"])]
    pub listen: Option<String>,
    /// Milliseconds between the two samples that give the rates (0: no rates;
    /// default 1000 for the table, 0 for --json)
    #[arg(long, value_name = "MS")]
    pub interval: Option<u64>,
    /// Key file of encrypted streams
    #[arg(long, value_name = "FILE", env = "IPCRESS_KEY_FILE")]
    pub key: Option<PathBuf>,
}

/// How records are cut from input and written to output.
#[derive(Args, Debug, Clone, Copy)]
#[group(multiple = false)]
pub struct FramingArgs {
    /// One record per line, without its newline (default)
    #[arg(long)]
    pub lines: bool,
    /// Each record is a u32 little-endian length, then that many bytes
    #[arg(long)]
    pub length_prefixed: bool,
    /// One record per file (put) / raw bytes without separator (get)
    #[arg(long)]
    pub whole: bool,
    /// Fixed-size records of BYTES each, back to back (raw video frames, say);
    /// put refuses input that ends inside a record; get writes them back to back
    #[arg(long, value_name = "BYTES", value_parser = parse_record_size)]
    pub record_size: Option<usize>,
}

impl FramingArgs {
    pub fn framing(&self) -> Framing {
        if let Some(n) = self.record_size {
            Framing::Fixed(n)
        } else if self.length_prefixed {
            Framing::LengthPrefixed
        } else if self.whole {
            Framing::Whole
        } else {
            Framing::Lines
        }
    }
}

#[derive(Args, Debug)]
pub struct PutArgs {
    /// Stream name
    #[arg(value_parser = name_arg)]
    pub name: String,
    /// Input files ('-' or none: stdin)
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub framing: FramingArgs,
    /// Key file of an encrypted stream
    #[arg(long, value_name = "FILE", env = "IPCRESS_KEY_FILE")]
    pub key: Option<PathBuf>,
}

/// Where a new consumer or group starts (`get`, `exec`); one that exists
/// goes on from its own position.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Where a new consumer starts: start, end or a position
    #[arg(long, value_name = "start|end|POS", default_value = "start", value_parser = parse_from)]
    pub from: ipcress::StartAt,
    /// Start at the first record committed at or after TIME: an age (10m, 1h30m) or RFC 3339
    #[arg(long, value_name = "AGE|TIME", value_parser = crate::when::parse_since, conflicts_with_all = ["from", "last"])]
    pub since: Option<std::time::SystemTime>,
    /// Start at the last N messages
    #[arg(long, value_name = "N", conflicts_with = "from")]
    pub last: Option<u64>,
}

impl StartArgs {
    /// The start position these options ask for.
    pub fn start_at(&self) -> ipcress::StartAt {
        match (self.since, self.last) {
            (Some(t), _) => ipcress::StartAt::Time(t),
            (None, Some(n)) => ipcress::StartAt::Last(n),
            (None, None) => self.from,
        }
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Stream name
    #[arg(value_parser = name_arg)]
    pub name: String,
    #[command(flatten)]
    pub start: StartArgs,
    /// Follow: keep waiting for new records until interrupted
    #[arg(short, long)]
    pub follow: bool,
    /// Read as the durable consumer NAME (its position is kept)
    #[arg(long, value_name = "NAME", value_parser = name_arg, conflicts_with = "group")]
    pub consumer: Option<String>,
    /// Read as a member of group NAME (each record goes to one member)
    #[arg(long, value_name = "NAME", value_parser = name_arg)]
    pub group: Option<String>,
    /// Stop after N records, waiting for them if needed
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub framing: FramingArgs,
    /// Key file of an encrypted stream
    #[arg(long, value_name = "FILE", env = "IPCRESS_KEY_FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Input stream
    #[arg(long = "in", value_name = "A", value_parser = name_arg)]
    pub input: String,
    /// Output stream
    #[arg(long = "out", value_name = "B", value_parser = name_arg)]
    pub output: String,
    /// Group the workers read A through (default: "exec-" and the output stream name)
    #[arg(long, value_name = "G", value_parser = name_arg)]
    pub group: Option<String>,
    /// Number of copies of the program sharing the work
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Length-prefixed records (u32 LE) on the program's stdin and stdout, not lines
    #[arg(long)]
    pub length_prefixed: bool,
    /// The program answers every input record with exactly one output record:
    /// acknowledge a record only once its answer is in B
    #[arg(long)]
    pub one_to_one: bool,
    #[command(flatten)]
    pub start: StartArgs,
    /// Stop after N input records in total
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop when no input record came for SECS seconds
    #[arg(long, value_name = "SECS")]
    pub until_idle: Option<f64>,
    /// Key file of encrypted streams
    #[arg(long, value_name = "FILE", env = "IPCRESS_KEY_FILE")]
    pub key: Option<PathBuf>,
    /// The program and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Refresh period in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub interval: u64,
    /// Print the table once as text (rates over one interval) and exit
    #[arg(long, conflicts_with = "batch")]
    pub once: bool,
    /// Print the table as text every interval, without a terminal
    #[arg(long)]
    pub batch: bool,
    /// With --batch: stop after N tables
    #[arg(short = 'n', long, value_name = "N", requires = "batch")]
    pub count: Option<u64>,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write ipcress.1 and one page per command (ipcress-create.1, ...)
    /// into this directory instead of printing ipcress.1
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The key file to create (refuses to overwrite)
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Stop generating after this many seconds (default: no time bound)
    #[arg(long, value_name = "N")]
    pub seconds: Option<f64>,
    /// Number of log lines to generate
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub lines: u64,
    /// Lines per second the generator aims for (0: as fast as possible)
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub rate: u64,
    /// Number of parser processes
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: u32,
}

#[derive(Args, Debug)]
pub struct DemoStageArgs {
    #[command(subcommand)]
    pub stage: DemoStage,
}

#[derive(Subcommand, Debug)]
pub enum DemoStage {
    /// Write synthetic log lines, then an END record
    Gen {
        #[arg(long)]
        out: String,
        #[arg(long)]
        lines: u64,
        #[arg(long)]
        seconds: Option<f64>,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// stdin to stdout: normalise each log line
    Parse,
    /// Copy CRITICAL lines of one stream to another
    Filter {
        #[arg(long = "in")]
        input: String,
        #[arg(long = "out")]
        output: String,
    },
    /// Read alerts until the END record; report counts and latency
    Sink {
        #[arg(long = "in")]
        input: String,
    },
}
