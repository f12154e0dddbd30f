//! The `ksyms` command: see `man 8 ksyms` (man/ksyms.8).

use std::io::Write;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let status = ksyms_tool::cli::run(&argv, &mut out, &mut err);
    let _ = out.flush();
    std::process::exit(status);
}
