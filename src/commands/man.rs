//! `sizeup man [COMMAND]`: the roff man page, generated from the clap definitions (the same
//! text as `--help`); `--dir` writes one page per command for packagers.

use crate::cli::{Cli, ManArgs};
use crate::ui::{self, usage_error, ExitStatus};
use clap::CommandFactory;

pub fn run(args: ManArgs) -> anyhow::Result<ExitStatus> {
    // `help` is clap's own subcommand, not a page anyone looks for. Building names the
    // subcommands `sizeup-sweep` etc., which become their pages' titles.
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    if let Some(dir) = &args.dir {
        super::ensure_dir(dir)?;
        for cmd in std::iter::once(&root).chain(root.get_subcommands()) {
            page(cmd.clone())
                .generate_to(dir)
                .map_err(|e| usage_error(format!("cannot write man pages to {}: {e}", dir.display()), None))?;
        }
        ui::info(format!(
            "wrote sizeup.1 and one sizeup-<command>.1 per command to {}",
            dir.display()
        ));
        return Ok(ExitStatus::Success);
    }
    let cmd = match &args.command {
        None => root,
        Some(name) => match root.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
                return Err(usage_error(
                    format!("no command `{name}` to show a man page for"),
                    Some(format!("pick one of: {}", names.join(", "))),
                ));
            }
        },
    };
    let mut roff = Vec::new();
    page(cmd).render(&mut roff)?;
    super::print_bytes(&roff)?;
    Ok(ExitStatus::Success)
}

/// A page whose footer names the program, not the subcommand (`sizeup 0.1.0`, never `sweep 0.1.0`).
fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("sizeup {}", env!("SIZEUP_VERSION")))
}
