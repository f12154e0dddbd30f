//! Builds a /dev/ksyms snapshot on Linux by running the real device code on the
//! simulated kernel of the tests (tests/sim): the first ELF file plays the kernel
//! (linker file 1, absolute values from `.symtab`, else `.dynsym`; a shared object's
//! values, offsets from its load address, are placed at FreeBSD/amd64's kernel
//! address), the others play
//! loaded modules (`.o` files or shared objects, "loaded" at made-up addresses).
//! It opens the device through `ksyms_rs_open`, reads it all with `ksyms_rs_read`,
//! writes the bytes to the `-o` file, closes, unloads, and checks that nothing leaked.
//!
//! ```text
//! cargo run --example simulate -- -o out.ksyms KERNEL [MODULE...]
//! ```

#[path = "../tests/sim/mod.rs"]
mod sim;

use sim::files::{SimFile, KERNEL_BASE, SHN_LORESERVE, SHN_UNDEF};
use sim::{Kernel, FREAD, KIOCGSIZE};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: simulate -o OUTPUT KERNEL [MODULE...]";

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, String> {
    let mut out: Option<PathBuf> = None;
    let mut inputs: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "-o" {
            out = Some(args.next().ok_or(USAGE)?.into());
        } else if a == "-h" || a == "--help" {
            return Err(USAGE.into());
        } else {
            inputs.push(a.into());
        }
    }
    let out = out.ok_or(USAGE)?;
    let (kernel_path, modules) = inputs.split_first().ok_or(USAGE)?;
    let mut kernel = SimFile::from_path(kernel_path, None)?;
    if is_shared_object(kernel_path)? {
        for sym in &mut kernel.syms {
            if sym.st_shndx != SHN_UNDEF && sym.st_shndx < SHN_LORESERVE {
                sym.st_value = sym.st_value.wrapping_add(KERNEL_BASE);
            }
        }
    }
    let modules = modules
        .iter()
        .enumerate()
        .map(|(i, p)| SimFile::from_path(p, Some(i as u64 + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let nmodules = modules.len();

    let k = Kernel::boot(kernel, modules);
    let p = k.spawn(false);
    let fd = k
        .open(p, FREAD)
        .map_err(|e| format!("ksyms_rs_open: errno {e}"))?;
    let bytes = k
        .read_all(p, fd, 1 << 20)
        .map_err(|e| format!("ksyms_rs_read: errno {e}"))?;
    let size = k
        .ioctl_u64(p, fd, KIOCGSIZE)
        .map_err(|e| format!("KIOCGSIZE: errno {e}"))?;
    k.close(p, fd).map_err(|e| format!("close: errno {e}"))?;
    if size != bytes.len() as u64 {
        return Err(format!("KIOCGSIZE says {size}, read gave {}", bytes.len()));
    }
    let walks = k.walks();
    let problems = k.shutdown_report();
    if !problems.is_empty() {
        return Err(format!("simulated kernel: {problems:#?}"));
    }

    let (symbols, locals) = sim::check::read_symbols(&bytes)
        .map_err(|e| format!("the snapshot does not parse: {e}"))?;
    std::fs::write(&out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(format!(
        "simulate: kernel + {nmodules} module(s): {} symbols ({locals} local), {} bytes \
         written to {} ({walks} linker walks, no leaks)",
        symbols.len(),
        bytes.len(),
        out.display()
    ))
}

/// Whether `path` is an ELF shared object (`e_type` ET_DYN, little endian).
fn is_shared_object(path: &std::path::Path) -> Result<bool, String> {
    use std::io::Read;
    let mut head = [0u8; 18];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(head[16..] == 3u16.to_le_bytes())
}
