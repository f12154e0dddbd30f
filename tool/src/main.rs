//! The `ksyms` command: see `man 8 ksyms` (man/ksyms.8).

use std::io::Write;

fn main() {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let status = ksyms_tool::cli::run(std::env::args_os(), &mut out, &mut err);
    let _ = out.flush();
    std::process::exit(status);
}
