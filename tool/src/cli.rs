//! Command line: clap parses it; [`run`] dispatches and returns the exit status.

use crate::assemble;
use crate::check;
use crate::elfread::ElfSymbols;
use crate::input;
use crate::machine::Machine;
use crate::report;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use globset::{Glob, GlobSetBuilder};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit statuses.
pub const EXIT_OK: i32 = 0;
/// `check` found faults; `find` matched nothing; `lookup` was given a bad address.
pub const EXIT_FAULT: i32 = 1;
/// Bad usage (clap's status for it too), unreadable or unparseable input.
pub const EXIT_ERROR: i32 = 2;

/// The synopsis, FreeBSD style; each command's own line is its usage.
pub const USAGE: &str = "\
ksyms [-f file] summary
       ksyms [-f file] lookup address ...
       ksyms [-f file] find pattern ...
       ksyms [-f file] check [--machine amd64|arm64]
       ksyms [-f file] dump [--json]
       ksyms build -o file kernel [module ...]";

/// Summarise, search and check the kernel symbol table (/dev/ksyms) or a saved
/// snapshot of it. See ksyms(8).
#[derive(Debug, Parser)]
#[command(
    name = "ksyms",
    version,
    override_usage = USAGE,
    subcommand_required = true,
    disable_help_subcommand = true
)]
struct Cli {
    /// Read the snapshot from <file> instead of /dev/ksyms (before or after the command)
    #[arg(short = 'f', long = "file", value_name = "file", global = true)]
    file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sizes, symbols by type and binding, address ranges, linker files
    #[command(override_usage = "ksyms [-f file] summary")]
    Summary,
    /// Each address as lockstat(1) prints it: symbol, symbol+0xoffset or the address
    #[command(override_usage = "ksyms [-f file] lookup address ...")]
    Lookup {
        /// Hexadecimal, with or without 0x, optionally +offset or -offset
        #[arg(value_name = "address", required = true)]
        addresses: Vec<String>,
    },
    /// The symbols whose names match a name or shell pattern, by address
    #[command(override_usage = "ksyms [-f file] find pattern ...")]
    Find {
        /// A symbol name, or a pattern with *, ? and [...] as in fnmatch(3)
        #[arg(value_name = "pattern", required = true, value_parser = report::pattern)]
        patterns: Vec<Glob>,
    },
    /// Whether the snapshot is what ksyms(4) describes; one line per fault
    #[command(override_usage = "ksyms [-f file] check [--machine amd64|arm64]")]
    Check {
        /// The machine the snapshot must be for [default: this one's for /dev/ksyms,
        /// either for a file]
        #[arg(long, value_name = "machine")]
        machine: Option<Machine>,
    },
    /// Every symbol, by address
    #[command(override_usage = "ksyms [-f file] dump [--json]")]
    Dump {
        /// Write JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot of ELF files: the first plays the kernel, the others modules
    #[command(override_usage = "ksyms build -o file kernel [module ...]")]
    Build {
        /// Where to write the snapshot
        #[arg(short = 'o', long = "output", value_name = "file")]
        output: PathBuf,
        /// An executable or shared object playing the kernel
        #[arg(value_name = "kernel")]
        kernel: PathBuf,
        /// Relocatable objects, shared objects or executables playing modules
        #[arg(value_name = "module")]
        modules: Vec<PathBuf>,
    },
}

/// The command line as clap knows it (what the manual page must document).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Runs the tool with `argv` (the program name first); returns the exit status.
pub fn run<I, T>(argv: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e, out, err),
    };
    if let (Command::Build { .. }, Some(_)) = (&cli.command, &cli.file) {
        // Reported with build's own usage.
        let (kind, msg) = (
            ErrorKind::ArgumentConflict,
            "-f names a snapshot to read; build writes one with -o",
        );
        let mut cmd = Cli::command();
        let e = cmd.find_subcommand_mut("build").map(|b| b.error(kind, msg));
        let e = e.unwrap_or_else(|| cmd.error(kind, msg));
        return clap_exit(&e, out, err);
    }
    if let Command::Build {
        output,
        kernel,
        modules,
    } = &cli.command
    {
        return run_build(output, kernel, modules, out, err);
    }

    let path = cli
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(input::DEVICE));
    let source = path.display().to_string();
    let bytes = match input::read(&path) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(err, "ksyms: {e}");
            return EXIT_ERROR;
        }
    };

    if let Command::Check { machine } = &cli.command {
        // The device holds this machine's symbols; a file may be of either.
        let machine = machine.or_else(|| input::is_device(&path).then(Machine::host).flatten());
        let r = check::check(&bytes, machine);
        for f in &r.faults {
            let _ = writeln!(out, "{source}: {f}");
        }
        return match r.machine.filter(|_| r.ok()) {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "{source}: ok: a well-formed {m} snapshot, {} symbols, {} bytes",
                    r.symbols,
                    bytes.len()
                );
                EXIT_OK
            }
            None => {
                let _ = writeln!(out, "{source}: {} faults", r.faults.len());
                EXIT_FAULT
            }
        };
    }

    let snap = match ElfSymbols::parse(&bytes) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                err,
                "ksyms: {source}: corrupt snapshot: {e} (`ksyms -f {source} check` lists every fault)"
            );
            return EXIT_ERROR;
        }
    };
    match &cli.command {
        Command::Summary => {
            let _ = write!(out, "{}", report::summary(&snap, &source));
        }
        Command::Dump { json: true } => {
            let _ = write!(out, "{}", report::dump_json(&snap, &source));
        }
        Command::Dump { json: false } => {
            let _ = write!(out, "{}", report::dump_text(&snap));
        }
        Command::Lookup { addresses } => {
            let mut addrs = Vec::new();
            for a in addresses {
                match report::parse_addr(a) {
                    Some(v) => addrs.push(v),
                    None => {
                        let _ = writeln!(err, "ksyms: lookup: {a:?} is not a hexadecimal address");
                        return EXIT_FAULT;
                    }
                }
            }
            let _ = write!(out, "{}", report::lookup(&snap, &addrs));
        }
        Command::Find { patterns } => {
            let mut set = GlobSetBuilder::new();
            for p in patterns {
                set.add(p.clone());
            }
            let hits = match set.build() {
                Ok(set) => report::find(&snap, &set),
                Err(e) => {
                    let _ = writeln!(err, "ksyms: find: {e}");
                    return EXIT_ERROR;
                }
            };
            if hits.is_empty() {
                let names: Vec<&str> = patterns.iter().map(Glob::glob).collect();
                let _ = writeln!(err, "ksyms: find: no symbol matches {}", names.join(" or "));
                return EXIT_FAULT;
            }
            let _ = write!(out, "{}", report::find_text(&snap, &hits));
        }
        Command::Check { .. } | Command::Build { .. } => {}
    }
    EXIT_OK
}

/// Prints what clap has to say (help and version to `out`, errors to `err`) and
/// returns clap's status for it: 0, or 2 for bad usage.
fn clap_exit(e: &clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let _ = if e.use_stderr() {
        write!(err, "{}", e.render())
    } else {
        write!(out, "{}", e.render())
    };
    e.exit_code()
}

fn run_build(
    output: &Path,
    kernel: &Path,
    modules: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let inputs: Vec<&Path> = std::iter::once(kernel)
        .chain(modules.iter().map(PathBuf::as_path))
        .collect();
    match assemble::build_file(&inputs, output) {
        Ok(stats) => {
            let _ = writeln!(
                out,
                "{}: {} bytes, {} symbols from {} files, for {}",
                output.display(),
                stats.size,
                stats.symbols,
                inputs.len(),
                stats.machine
            );
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "ksyms: build: {e}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command, USAGE};
    use clap::CommandFactory;
    use std::path::PathBuf;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("ksyms").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_commands_usage_is_a_line_of_the_synopsis() {
        let cmd = Cli::command();
        let lines: Vec<&str> = USAGE.lines().map(str::trim).collect();
        let mut n = 0;
        for sub in cmd.get_subcommands() {
            let mut sub = sub.clone();
            let usage = sub.render_usage().to_string();
            let usage = usage.trim_start_matches("Usage: ").trim();
            assert!(lines.contains(&usage), "{usage:?} not in {lines:?}");
            n += 1;
        }
        assert_eq!(n, lines.len());
    }

    #[test]
    fn file_before_or_after_the_command() {
        for args in [
            &["-f", "snap", "lookup", "0x10", "20"][..],
            &["lookup", "-f", "snap", "0x10", "20"][..],
            &["lookup", "0x10", "--file=snap", "20"][..],
            &["-fsnap", "lookup", "0x10", "20"][..],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.file, Some(PathBuf::from("snap")), "{args:?}");
            match cli.command {
                Command::Lookup { addresses } => assert_eq!(addresses, ["0x10", "20"]),
                other => panic!("{other:?}"),
            }
        }
        match parse(&["find", "--", "-x"]).unwrap().command {
            Command::Find { patterns } => assert_eq!(patterns[0].glob(), "-x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_usage_names_the_argument() {
        let e = parse(&["summary", "-q"]).unwrap_err();
        assert!(e.to_string().contains("'-q'"), "{e}");
        let e = parse(&["summary", "-f"]).unwrap_err();
        assert!(e.to_string().contains("--file <file>"), "{e}");
        let e = parse(&["find", "x["]).unwrap_err();
        assert!(e.to_string().contains("'x['"), "{e}");
        let e = parse(&["check", "--machine", "sparc64"]).unwrap_err();
        assert!(e.to_string().contains("'sparc64'"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
