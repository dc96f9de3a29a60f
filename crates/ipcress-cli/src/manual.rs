//! `ipcress completions SHELL` and `ipcress man`: both made from the same
//! clap definition as the parser, so they cannot drift from it.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::print_out;

pub fn completions(a: CompletionsArgs) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut visible(Cli::command()), "ipcress", &mut out);
    print_out(&String::from_utf8(out).context("completion script")?)
}

/// `cmd` without its hidden commands (the demo's stages), which the
/// completion generators would list.
fn visible(cmd: clap::Command) -> clap::Command {
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("ipcress")
        .about(cmd.get_about().cloned().unwrap_or_default())
        .version(cmd.get_version().map(str::to_owned).unwrap_or_default())
        .args(cmd.get_arguments().cloned())
        .subcommands(subs)
}

pub fn man(a: ManArgs) -> Result<()> {
    let cmd = visible(Cli::command());
    match a.out_dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("render the manual")?;
            print_out(&String::from_utf8(out).context("manual page")?)
        }
        Some(dir) => write_pages(&dir, cmd),
    }
}

/// ipcress.1, then ipcress-CMD.1 for every visible command.
fn write_pages(dir: &Path, cmd: clap::Command) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut pages = vec![("ipcress".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ipcress-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .with_context(|| format!("render {name}"))?;
        std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
