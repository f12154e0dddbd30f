//! Command line: hand-written parsing, dispatch, exit status.

use crate::assemble;
use crate::check;
use crate::elfread::Snapshot;
use crate::glob::Glob;
use crate::input;
use crate::report;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit statuses.
pub const EXIT_OK: i32 = 0;
/// `check` found faults; `find` matched nothing; `lookup` was given a bad address.
pub const EXIT_FAULT: i32 = 1;
/// Bad usage, unreadable or unparseable input.
pub const EXIT_ERROR: i32 = 2;

pub const USAGE: &str = "\
usage: ksyms [-f file] summary
       ksyms [-f file] lookup address ...
       ksyms [-f file] find name|pattern ...
       ksyms [-f file] check
       ksyms [-f file] dump [--json]
       ksyms build -o file kernel-elf [module-elf ...]
";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    file: Option<PathBuf>,
    output: Option<PathBuf>,
    json: bool,
    command: Option<String>,
    operands: Vec<String>,
    help: bool,
    version: bool,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        file: None,
        output: None,
        json: false,
        command: None,
        operands: Vec::new(),
        help: false,
        version: false,
    };
    let mut it = argv.iter();
    let mut only_operands = false;
    while let Some(arg) = it.next() {
        let positional = |s: &String, a: &mut Args| {
            if a.command.is_none() {
                a.command = Some(s.clone());
            } else {
                a.operands.push(s.clone());
            }
        };
        if only_operands || arg == "-" || !arg.starts_with('-') {
            positional(arg, &mut a);
            continue;
        }
        match arg.as_str() {
            "--" => only_operands = true,
            "-h" | "--help" => a.help = true,
            "-V" | "--version" => a.version = true,
            "--json" => a.json = true,
            "-f" | "--file" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("{arg} needs a file name"))?;
                a.file = Some(PathBuf::from(v));
            }
            "-o" | "--output" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("{arg} needs a file name"))?;
                a.output = Some(PathBuf::from(v));
            }
            s if s.starts_with("--file=") => a.file = Some(PathBuf::from(&s[7..])),
            s if s.starts_with("-f") => a.file = Some(PathBuf::from(&s[2..])),
            s if s.starts_with("-o") => a.output = Some(PathBuf::from(&s[2..])),
            // A negative number is no option here; anything else is.
            s => return Err(format!("unknown option {s}")),
        }
    }
    Ok(a)
}

/// Runs the tool with `argv` (without the program name); returns the exit status.
pub fn run(argv: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let args = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = write!(err, "ksyms: {e}\n{USAGE}");
            return EXIT_ERROR;
        }
    };
    if args.help {
        let _ = write!(out, "{USAGE}");
        return EXIT_OK;
    }
    if args.version {
        let _ = writeln!(out, "ksyms {}", env!("CARGO_PKG_VERSION"));
        return EXIT_OK;
    }
    let Some(command) = args.command.as_deref() else {
        let _ = write!(err, "ksyms: no command\n{USAGE}");
        return EXIT_ERROR;
    };
    let usage_error = |err: &mut dyn Write, msg: &str| {
        let _ = write!(err, "ksyms: {command}: {msg}\n{USAGE}");
        EXIT_ERROR
    };
    if args.json && command != "dump" {
        return usage_error(err, "--json goes with dump only");
    }
    if args.output.is_some() && command != "build" {
        return usage_error(err, "-o goes with build only");
    }
    match command {
        "summary" | "check" if !args.operands.is_empty() => {
            return usage_error(err, "takes no operands")
        }
        "dump" if !args.operands.is_empty() => return usage_error(err, "takes no operands"),
        "lookup" | "find" if args.operands.is_empty() => {
            return usage_error(err, "needs at least one operand")
        }
        "summary" | "check" | "dump" | "lookup" | "find" => {}
        "build" => return run_build(&args, out, err),
        other => {
            let _ = write!(err, "ksyms: unknown command {other}\n{USAGE}");
            return EXIT_ERROR;
        }
    }

    let path = args
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

    if command == "check" {
        let r = check::check(&bytes);
        for f in &r.faults {
            let _ = writeln!(out, "{source}: {f}");
        }
        return if r.ok() {
            let _ = writeln!(
                out,
                "{source}: ok: a well-formed snapshot, {} symbols, {} bytes",
                r.symbols,
                bytes.len()
            );
            EXIT_OK
        } else {
            let _ = writeln!(out, "{source}: {} faults", r.faults.len());
            EXIT_FAULT
        };
    }

    let snap = match Snapshot::parse(&bytes) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                err,
                "ksyms: {source}: corrupt snapshot: {e} (`ksyms -f {source} check` lists every fault)"
            );
            return EXIT_ERROR;
        }
    };
    match command {
        "summary" => {
            let _ = write!(out, "{}", report::summary(&snap, &source));
            EXIT_OK
        }
        "dump" if args.json => {
            let _ = write!(out, "{}", report::dump_json(&snap, &source));
            EXIT_OK
        }
        "dump" => {
            let _ = write!(out, "{}", report::dump_text(&snap));
            EXIT_OK
        }
        "lookup" => {
            let mut addrs = Vec::new();
            for o in &args.operands {
                match report::parse_addr(o) {
                    Some(a) => addrs.push(a),
                    None => {
                        let _ = writeln!(err, "ksyms: lookup: {o:?} is not a hexadecimal address");
                        return EXIT_FAULT;
                    }
                }
            }
            let _ = write!(out, "{}", report::lookup(&snap, &addrs));
            EXIT_OK
        }
        "find" => {
            let globs: Vec<Glob> = args.operands.iter().map(|p| Glob::new(p)).collect();
            let hits = report::find(&snap, &globs);
            if hits.is_empty() {
                let _ = writeln!(
                    err,
                    "ksyms: find: no symbol matches {}",
                    args.operands.join(" or ")
                );
                return EXIT_FAULT;
            }
            let _ = write!(out, "{}", report::find_text(&snap, &hits));
            EXIT_OK
        }
        _ => EXIT_ERROR,
    }
}

fn run_build(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(output) = args.output.as_deref() else {
        let _ = write!(err, "ksyms: build: needs -o file\n{USAGE}");
        return EXIT_ERROR;
    };
    if args.operands.is_empty() {
        let _ = write!(err, "ksyms: build: needs a kernel ELF file\n{USAGE}");
        return EXIT_ERROR;
    }
    let inputs: Vec<&Path> = args.operands.iter().map(Path::new).collect();
    match assemble::build_file(&inputs, output) {
        Ok(stats) => {
            let _ = writeln!(
                out,
                "{}: {} bytes, {} symbols from {} files",
                output.display(),
                stats.size,
                stats.symbols,
                inputs.len()
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
    use super::parse;
    use std::path::PathBuf;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_anywhere() {
        let a = parse(&v(&["lookup", "-f", "snap", "0x10", "20"])).unwrap();
        assert_eq!(a.file, Some(PathBuf::from("snap")));
        assert_eq!(a.command.as_deref(), Some("lookup"));
        assert_eq!(a.operands, v(&["0x10", "20"]));
        let a = parse(&v(&["-fsnap", "dump", "--json"])).unwrap();
        assert_eq!(a.file, Some(PathBuf::from("snap")));
        assert!(a.json);
        let a = parse(&v(&["find", "--", "-x"])).unwrap();
        assert_eq!(a.operands, v(&["-x"]));
    }

    #[test]
    fn bad_options() {
        assert!(parse(&v(&["summary", "-q"])).is_err());
        assert!(parse(&v(&["summary", "-f"])).is_err());
    }
}
