//! `ipcress`: create, inspect and remove streams; move records between
//! streams and the shell; run any program as a stage; watch it all live.
//!
//! Every error ends as one line on stderr, `ipcress: <message>`, with exit
//! code 1 (runtime) or 2 (usage). See docs/CLI.md.
// One exception, `child::die_with_parent` (a `pre_exec` hook that only
// makes two system calls); everything else is safe code.
#![deny(unsafe_code)]

mod admin;
mod bridge;
mod child;
mod cli;
mod demo;
mod exec;
mod framing;
mod get;
mod logs;
mod manual;
mod metrics;
mod put;
mod signals;
mod stat;
mod top;
mod units;
mod when;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use ipcress::{Key, Stream};

use cli::{Cli, Cmd};

/// Ends the program with `code` after printing `message` (if not empty).
#[derive(Debug)]
pub struct ExitWith {
    /// The process exit code.
    pub code: u8,
    /// The line to print after `ipcress: ` (nothing if empty).
    pub message: String,
}

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitWith {}

/// What every command gets: where the streams live.
pub struct Ctx {
    /// The root directory of the streams.
    pub root: PathBuf,
}

impl Ctx {
    /// Open stream `name`, giving it `key` if it is encrypted.
    pub fn open(&self, name: &str, key: Option<&Key>) -> Result<Stream> {
        let s = Stream::open_in(&self.root, name).map_err(|e| explain(name, e))?;
        Ctx::keyed(name, s, key)
    }

    /// Open stream `name` only to look at it (`ls`, `stat`, `top`): no
    /// byte of it is written, not even a repair after a crash.
    pub fn inspect(&self, name: &str, key: Option<&Key>) -> Result<Stream> {
        let s = Stream::inspect_in(&self.root, name).map_err(|e| explain(name, e))?;
        Ctx::keyed(name, s, key)
    }

    fn keyed(name: &str, s: Stream, key: Option<&Key>) -> Result<Stream> {
        match key {
            Some(k) if s.encrypted() => s.with_key(k).map_err(|e| explain(name, e)),
            _ => Ok(s),
        }
    }
}

/// Turn a library error into a one-line message that names the stream.
pub fn explain(name: &str, e: ipcress::Error) -> anyhow::Error {
    use ipcress::Error as E;
    match e {
        E::NotFound { .. }
        | E::AlreadyExists { .. }
        | E::InvalidName { .. }
        | E::InUse { .. }
        | E::StreamInUse { .. }
        | E::Removed { .. }
        | E::Decode { .. }
        | E::Key(_)
        | E::InvalidOptions(_)
        | E::SlotsExhausted(_) => anyhow::Error::new(e),
        E::KeyRequired { .. } => {
            anyhow::anyhow!("{e} (give --key FILE or set IPCRESS_KEY_FILE)")
        }
        e => anyhow::Error::new(e).context(format!("stream {name}")),
    }
}

/// Load the key file given with `--key` (or IPCRESS_KEY_FILE), if any.
pub fn load_key(path: Option<&Path>) -> Result<Option<Key>> {
    match path {
        None => Ok(None),
        Some(p) if p.as_os_str().is_empty() => Ok(None),
        Some(p) => Ok(Some(Key::load(p)?)),
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say(format_args!(
            "ipcress: internal error: {}{at}",
            one_line(&msg).trim_end_matches('.')
        ));
    }));
    logs::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(x) = e.downcast_ref::<ExitWith>() {
                if !x.message.is_empty() {
                    say(format_args!("ipcress: {}", one_line(&x.message)));
                }
                return ExitCode::from(x.code);
            }
            say(format_args!("ipcress: {}", one_line(&format!("{e:#}"))));
            ExitCode::FAILURE
        }
    }
}

/// Write `text` to stdout. A reader that went away (`ipcress ls | head -1`)
/// ends the command quietly with success, as it ends any Unix filter;
/// other write errors are errors.
pub fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ExitWith {
            code: 0,
            message: String::new(),
        }
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context("write to stdout")),
    }
}

/// Write one line to stderr. A closed stderr (`2>&1 | head`) drops the
/// line: `eprintln!` would panic there, and a panic while reporting a
/// panic aborts the process.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Collapse a message onto one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Print a clap error as one line (help and version as they are).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let head = text.split("\n\n").next().unwrap_or(text);
    say(format_args!(
        "ipcress: {} (see 'ipcress --help')",
        one_line(head).trim_end_matches('.')
    ));
    ExitCode::from(2)
}

fn run(cli: Cli) -> Result<()> {
    let root = match cli.dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => ipcress::default_root(),
    };
    let ctx = Ctx { root };
    match cli.cmd {
        Cmd::Create(a) => admin::create(&ctx, a),
        Cmd::Ls(a) => admin::ls(&ctx, a),
        Cmd::Rm(a) => admin::rm(&ctx, a),
        Cmd::Stat(a) => stat::run(&ctx, a),
        Cmd::Put(a) => put::run(&ctx, a),
        Cmd::Get(a) => get::run(&ctx, a),
        Cmd::Exec(a) => exec::run(&ctx, a),
        Cmd::Top(a) => top::run(&ctx, a),
        Cmd::Keygen(a) => {
            let key = Key::write_new(&a.file)?;
            print_out(&format!("{}\n", key.fingerprint()))
        }
        Cmd::Bridge(a) => bridge::run(&ctx, a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Completions(a) => manual::completions(a),
        Cmd::Man(a) => manual::man(a),
        Cmd::DemoStage(a) => demo::stage(&ctx, a).context("demo stage"),
    }
}
