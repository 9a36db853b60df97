//! Man pages and shell completions, generated from a binary's clap definition.
//!
//! Both binaries take a hidden `--generate WHAT` that prints one artefact to standard
//! output and exits; `scripts/package.sh` runs it to fill the Debian packages. The text
//! comes from the same `clap::Command` that parses the command line, so the page and the
//! completions cannot drift from the options the binary accepts.
//!
//! The man page is one page per binary: the binary's own synopsis and options, then a
//! COMMANDS section with every subcommand's synopsis, description and options, so
//! `man slony-receiver` alone documents the whole command line.

use clap::ValueEnum;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::io::{self, Write};

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Artefact {
    /// The man page (roff), section 1.
    Man,
    /// The bash completion script.
    CompleteBash,
    /// The zsh completion script.
    CompleteZsh,
    /// The fish completion script.
    CompleteFish,
}

/// Writes `what` for the command `cmd` (the binary's `Cli::command()`) to `out`.
///
/// # Errors
///
/// Writing to `out` failed.
pub fn write(mut cmd: clap::Command, what: Artefact, out: &mut dyn Write) -> io::Result<()> {
    let shell = match what {
        Artefact::Man => return man(cmd, out),
        Artefact::CompleteBash => Shell::Bash,
        Artefact::CompleteZsh => Shell::Zsh,
        Artefact::CompleteFish => Shell::Fish,
    };
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// The one man page: the binary's sections, then every subcommand under COMMANDS.
fn man(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    // `build` gives each subcommand its full name ("slony-receiver pull") for its
    // synopsis, and drops the `help` subcommand, which needs no page.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let page = Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;

    let mut heading = Roff::new();
    heading.control("SH", ["COMMANDS"]);
    heading.to_writer(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full_name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        let mut title = Roff::new();
        title.control("SS", [full_name]);
        title.to_writer(out)?;
        // The subcommand's own parts, each without its section heading: under COMMANDS
        // they are paragraphs of one entry. The global options are on the page once,
        // under OPTIONS.
        let sub = sub
            .clone()
            .mut_args(|a| if a.is_global_set() { a.hide(true) } else { a });
        let sub_page = Man::new(sub);
        let mut parts = [Vec::new(), Vec::new(), Vec::new()];
        sub_page.render_synopsis_section(&mut parts[0])?;
        sub_page.render_description_section(&mut parts[1])?;
        sub_page.render_options_section(&mut parts[2])?;
        for (i, part) in parts.iter().enumerate() {
            let text = String::from_utf8_lossy(part);
            let mut lines = text.lines().filter(|l| !l.starts_with(".SH ")).peekable();
            if lines.peek().is_none() {
                continue;
            }
            if i > 0 {
                writeln!(out, ".PP")?;
            }
            if i == 2 {
                let mut label = Roff::new();
                label.text([bold("Options:")]);
                label.to_writer(out)?;
            }
            for line in lines {
                writeln!(out, "{line}")?;
            }
        }
    }

    page.render_version_section(out)?;
    let mut see_also = Roff::new();
    see_also.control("SH", ["SEE ALSO"]);
    see_also.text([roman(format!(
        "The example configurations and systemd units' notes in /usr/share/doc/{}/ \
         (Debian package), and the project's README.",
        cmd.get_name()
    ))]);
    see_also.to_writer(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("demo")
            .version("1.0")
            .about("A demo.")
            .arg(clap::Arg::new("verbose").long("verbose").global(true))
            .subcommand(
                clap::Command::new("first")
                    .about("The first one.")
                    .arg(clap::Arg::new("config").long("config").value_name("FILE")),
            )
            .subcommand(clap::Command::new("second").about("The second one."))
    }

    fn text(what: Artefact) -> String {
        let mut out = Vec::new();
        write(cmd(), what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_man_page_has_every_subcommand_with_its_options() {
        let page = text(Artefact::Man);
        assert!(page.contains("\n.TH demo 1"), "{page}");
        assert!(page.contains(".SH COMMANDS"), "{page}");
        assert!(page.contains(".SS \"demo first\""), "{page}");
        assert!(page.contains(".SS \"demo second\""), "{page}");
        assert!(page.contains("The first one."), "{page}");
        assert!(page.contains("\\-\\-config"), "{page}");
        assert_eq!(page.matches(".SH SYNOPSIS").count(), 1, "{page}");
        assert!(!page.contains("demo\\-help"), "{page}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for what in [
            Artefact::CompleteBash,
            Artefact::CompleteZsh,
            Artefact::CompleteFish,
        ] {
            let script = text(what);
            assert!(script.contains("first"), "{what:?}: {script}");
            assert!(script.contains("second"), "{what:?}: {script}");
        }
    }
}
