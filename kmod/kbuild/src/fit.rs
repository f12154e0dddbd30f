//! The kernel-fit checks: does this object fit the FreeBSD kernel of its
//! architecture?
//!
//! Each check has a name, printed as `kernel-fit ok (name): ...` or
//! `KERNEL-FIT FAIL (name): ...`:
//! - `object`: a relocatable ELF object of the architecture's machine.
//! - `relocations`: only types the kernel linker applies (amd64: the object's own,
//!   since modules are relocatable; arm64: the dynamic relocations of the shared
//!   object that kmod.mk links, reproduced with `ld -Bshareable -znotext -znorelro`).
//! - `instructions`: no floating-point or vector instruction or register (the kernel
//!   does not save that state for its own code).
//! - `red-zone`: no access below the stack pointer, which an interrupt taken on the
//!   same stack overwrites.
//! - `frame-pointers`: every function sets up a frame pointer before it calls
//!   anything, so DTrace's stack(), lockstat -s, DDB and kgdb can walk through it.
//! - `undefined`: only the shim's `kpi_*` and the kernel's mem* are undefined, and the
//!   object defines no mem* of its own (they would shadow the kernel's).
//! - `sections`: no constructors, TLS, unwind tables, GOT/PLT, dynamic sections,
//!   embedded bitcode or common symbols.
//! - `panic`: nothing reaches the panic path (core's panicking functions, the panic
//!   handler, kpi_panic): every error is an errno.
//! - `text-size`: a sanity bound on the code.
//! - `entry-points`: every `ksyms_rs_*` of the kpi header is a defined global function
//!   (only for the module's own object).

use std::collections::BTreeMap;
use std::path::Path;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction,
    InstructionInfoFactory, Mnemonic, OpKind, Register,
};
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol, RelocationFlags, SymbolKind};

use crate::arch::Arch;
use crate::header::Header;
use crate::kernel::{run, tool_command};
use crate::Failure;

/// The largest code the checks accept by default: a sanity bound, about ten times
/// what the module needs.
pub const TEXT_LIMIT: u64 = 100 * 1024;

/// Every check's name, in the order they run.
pub const CHECKS: &[&str] = &[
    "object",
    "relocations",
    "instructions",
    "red-zone",
    "frame-pointers",
    "undefined",
    "sections",
    "panic",
    "text-size",
    "entry-points",
];

pub struct Options {
    pub text_limit: u64,
    /// Check that every entry point of the kpi header is defined (the module's own
    /// object; not a test object).
    pub entry_points: bool,
}

pub struct Finding {
    pub check: &'static str,
    pub ok: bool,
    pub message: String,
}

#[derive(Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn ok(&mut self, check: &'static str, message: String) {
        self.findings.push(Finding {
            check,
            ok: true,
            message,
        });
    }

    fn fail(&mut self, check: &'static str, message: String) {
        self.findings.push(Finding {
            check,
            ok: false,
            message,
        });
    }

    fn result(&mut self, check: &'static str, problems: &[String], ok_message: String) {
        if problems.is_empty() {
            self.ok(check, ok_message);
        } else {
            self.fail(check, problems.join("\n  "));
        }
    }

    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }

    pub fn failed(&self) -> Vec<&'static str> {
        self.findings
            .iter()
            .filter(|f| !f.ok)
            .map(|f| f.check)
            .collect()
    }

    /// Passes on stdout, failures on stderr.
    pub fn print(&self) {
        for f in &self.findings {
            if f.ok {
                println!("kernel-fit ok ({}): {}", f.check, f.message);
            } else {
                eprintln!("KERNEL-FIT FAIL ({}): {}", f.check, f.message);
            }
        }
    }
}

type Elf<'d> = ElfFile64<'d, Endianness>;

/// Runs every check on the object at `path`.
pub fn check_object(
    path: &Path,
    arch: Arch,
    header: &Header,
    opts: &Options,
) -> Result<Report, Failure> {
    let data = std::fs::read(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let mut report = Report::default();
    let file = match Elf::parse(&*data) {
        Ok(file) => file,
        Err(e) => {
            report.fail(
                "object",
                format!("{}: not a 64-bit ELF file ({e})", path.display()),
            );
            return Ok(report);
        }
    };
    let endian = file.endian();
    let ehdr = file.elf_header();
    if ehdr.e_type(endian) != elf::ET_REL
        || ehdr.e_machine(endian) != arch.elf_machine()
        || endian != Endianness::Little
    {
        report.fail(
            "object",
            format!(
                "{} is not a little-endian {} relocatable ELF object (e_type {}, e_machine {})",
                path.display(),
                arch.name(),
                ehdr.e_type(endian),
                ehdr.e_machine(endian)
            ),
        );
        return Ok(report);
    }
    report.ok(
        "object",
        format!("{}: {} relocatable object", path.display(), arch.name()),
    );

    relocations(&mut report, &file, path, arch)?;
    code(&mut report, &file, arch);
    undefined(&mut report, &file, arch, header);
    sections(&mut report, &file);
    panic_path(&mut report, &file);
    let text = text_size(&file);
    if text >= opts.text_limit {
        report.fail(
            "text-size",
            format!("{text} bytes of code, limit {}", opts.text_limit),
        );
    } else {
        report.ok(
            "text-size",
            format!("{text} bytes of code (limit {})", opts.text_limit),
        );
    }
    if opts.entry_points {
        entry_points(&mut report, &file, header);
    }
    Ok(report)
}

/// "NAME xCOUNT, ..." of a count per relocation type.
fn tally(arch: Arch, counts: &BTreeMap<u32, usize>) -> String {
    counts
        .iter()
        .map(|(t, n)| format!("{} x{n}", arch.relocation_name(*t)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn relocations(
    report: &mut Report,
    file: &Elf<'_>,
    path: &Path,
    arch: Arch,
) -> Result<(), Failure> {
    let mut counts = BTreeMap::new();
    let mut unreadable = 0usize;
    let what = if arch.shared_modules() {
        // The kernel applies the dynamic relocations of the module, a shared object
        // linked from this one: link it the way kmod.mk does and read those.
        let so = std::env::temp_dir().join(format!(
            "ksyms-kbuild-{}-{}.so",
            std::process::id(),
            path.file_stem()
                .map_or("obj".into(), |s| s.to_string_lossy())
        ));
        let (ld, mut cmd) = tool_command("LD", &["ld.lld", "ld"]);
        let linked = run(
            cmd.args([
                "-m",
                arch.ld_emulation(),
                "-Bshareable",
                "-znotext",
                "-znorelro",
                "-o",
            ])
            .arg(&so)
            .arg(path),
            &format!("{ld} -Bshareable (the module's shared link)"),
        );
        if let Err(e) = linked {
            let _ = std::fs::remove_file(&so);
            report.fail("relocations", e.0);
            return Ok(());
        }
        let data = std::fs::read(&so);
        let _ = std::fs::remove_file(&so);
        let data = data.map_err(|e| Failure(format!("{}: {e}", so.display())))?;
        let shared = Elf::parse(&*data)
            .map_err(|e| Failure(format!("the shared link of {}: {e}", path.display())))?;
        for (_, reloc) in shared.dynamic_relocations().into_iter().flatten() {
            match reloc.flags() {
                RelocationFlags::Elf { r_type } => *counts.entry(r_type).or_insert(0) += 1,
                _ => unreadable += 1,
            }
        }
        "dynamic relocations of the shared module"
    } else {
        for section in file.sections() {
            for (_, reloc) in section.relocations() {
                match reloc.flags() {
                    RelocationFlags::Elf { r_type } => *counts.entry(r_type).or_insert(0) += 1,
                    _ => unreadable += 1,
                }
            }
        }
        "relocations"
    };
    let bad: BTreeMap<u32, usize> = counts
        .iter()
        .filter(|(t, _)| !arch.applied_relocations().contains(t))
        .map(|(t, n)| (*t, *n))
        .collect();
    if unreadable > 0 {
        report.fail(
            "relocations",
            format!("{unreadable} relocations not understood"),
        );
    } else if !bad.is_empty() {
        report.fail(
            "relocations",
            format!(
                "types the kernel linker does not apply: {}",
                tally(arch, &bad)
            ),
        );
    } else if counts.is_empty() {
        report.ok("relocations", format!("no {what}"));
    } else {
        report.ok("relocations", format!("{what}: {}", tally(arch, &counts)));
    }
    Ok(())
}

/// A function (or, in a section without function symbols, the whole section).
struct Function<'d> {
    name: String,
    address: u64,
    bytes: &'d [u8],
    /// (offset, is data) of the arm64 mapping symbols `$x` and `$d` in its section.
    mapping: Vec<(u64, bool)>,
}

fn functions<'d>(file: &Elf<'d>) -> Vec<Function<'d>> {
    let mut out = Vec::new();
    for section in file.sections() {
        let executable = section.elf_section_header().sh_flags(file.endian())
            & u64::from(elf::SHF_EXECINSTR)
            != 0;
        if !executable {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        let index = section.index();
        let in_section = |s: &object::read::elf::ElfSymbol64<'d, '_, Endianness>| {
            s.section_index() == Some(index)
        };
        let mut mapping: Vec<(u64, bool)> = file
            .symbols()
            .filter(in_section)
            .filter_map(|s| {
                let name = s.name().ok()?;
                (name.starts_with("$x") || name.starts_with("$d"))
                    .then(|| (s.address(), name.starts_with("$d")))
            })
            .collect();
        mapping.sort();
        let mut found = false;
        for sym in file.symbols().filter(in_section) {
            if sym.kind() != SymbolKind::Text || sym.size() == 0 {
                continue;
            }
            let start = usize::try_from(sym.address()).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(sym.size()).unwrap_or(usize::MAX));
            if let Some(bytes) = data.get(start..end) {
                found = true;
                out.push(Function {
                    name: sym.name().unwrap_or("?").to_string(),
                    address: sym.address(),
                    bytes,
                    mapping: mapping.clone(),
                });
            }
        }
        if !found && !data.is_empty() {
            out.push(Function {
                name: section.name().unwrap_or("?").to_string(),
                address: 0,
                bytes: data,
                mapping,
            });
        }
    }
    out
}

/// Problems of one function, by check.
#[derive(Default)]
struct CodeProblems {
    /// Floating-point or vector instructions, and (arm64) writes to x18.
    forbidden: Vec<String>,
    red_zone: Vec<String>,
    frame: Vec<String>,
    instructions: usize,
}

fn code(report: &mut Report, file: &Elf<'_>, arch: Arch) {
    let funcs = functions(file);
    let mut all = CodeProblems::default();
    for f in &funcs {
        let p = match arch {
            Arch::Amd64 => amd64_function(f),
            Arch::Aarch64 => aarch64_function(f),
        };
        all.forbidden.extend(p.forbidden);
        all.red_zone.extend(p.red_zone);
        all.frame.extend(p.frame);
        all.instructions += p.instructions;
    }
    let first = |v: &[String]| v.iter().take(8).cloned().collect::<Vec<_>>();
    report.result(
        "instructions",
        &first(&all.forbidden),
        format!(
            "{} instructions in {} functions, no floating-point or vector instruction or register",
            all.instructions,
            funcs.len()
        ),
    );
    report.result(
        "red-zone",
        &first(&all.red_zone),
        "no access below the stack pointer".into(),
    );
    report.result(
        "frame-pointers",
        &first(&all.frame),
        format!(
            "all {} functions set up a frame pointer before any call",
            funcs.len()
        ),
    );
}

/// cpuid features of floating-point and vector instruction sets (iced's names).
const FPU_SIMD_FEATURES: &[&str] = &[
    "FPU", "MMX", "SSE", "SSSE3", "AVX", "FMA", "F16C", "D3NOW", "AMX", "KNC", "XSAVE", "FXSR",
];

fn is_fpu_simd_register(r: Register) -> bool {
    r.is_xmm()
        || r.is_ymm()
        || r.is_zmm()
        || r.is_k()
        || (Register::ST0..=Register::ST7).contains(&r)
        || (Register::MM0..=Register::MM7).contains(&r)
}

fn amd64_function(f: &Function<'_>) -> CodeProblems {
    let mut p = CodeProblems::default();
    let mut decoder = Decoder::with_ip(64, f.bytes, f.address, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut formatter = GasFormatter::new();
    let show = |formatter: &mut GasFormatter, i: &Instruction| {
        let mut text = String::new();
        formatter.format(i, &mut text);
        format!("{}+{:#x}: {text}", f.name, i.ip() - f.address)
    };
    let instrs: Vec<Instruction> = decoder.iter().collect();
    p.instructions = instrs.len();

    // Frame: `push %rbp; mov %rsp,%rbp`, with no call before it.
    let is_push_rbp =
        |i: &Instruction| i.mnemonic() == Mnemonic::Push && i.op0_register() == Register::RBP;
    let is_mov_rbp_rsp = |i: &Instruction| {
        matches!(i.code(), Code::Mov_rm64_r64 | Code::Mov_r64_rm64)
            && i.op0_register() == Register::RBP
            && i.op1_register() == Register::RSP
    };
    let frame_at = instrs
        .windows(2)
        .position(|w| is_push_rbp(&w[0]) && is_mov_rbp_rsp(&w[1]));
    match frame_at {
        None => p
            .frame
            .push(format!("{}: no `push %rbp; mov %rsp,%rbp`", f.name)),
        Some(at) => {
            if let Some(call) = instrs[..at].iter().find(|i| {
                matches!(
                    i.flow_control(),
                    FlowControl::Call | FlowControl::IndirectCall
                )
            }) {
                p.frame.push(format!(
                    "{} (a call before the frame)",
                    show(&mut formatter, call)
                ));
            }
        }
    }

    // Red zone: memory below %rsp, or below %rbp in a framed function that never
    // lowers %rsp below %rbp.
    let mut framed = false;
    let mut lowered = false;
    let mut below_rbp = None;
    for i in &instrs {
        if let Some(feature) = i.cpuid_features().iter().find(|f| {
            let name = format!("{f:?}");
            FPU_SIMD_FEATURES.iter().any(|p| name.starts_with(p))
        }) {
            p.forbidden
                .push(format!("{} ({feature:?})", show(&mut formatter, i)));
        } else if info
            .info(i)
            .used_registers()
            .iter()
            .any(|u| is_fpu_simd_register(u.register()))
        {
            p.forbidden.push(show(&mut formatter, i));
        }
        let memory = (0..i.op_count()).any(|k| i.op_kind(k) == OpKind::Memory);
        let disp = i.memory_displacement64() as i64;
        if memory && i.memory_base() == Register::RSP && disp < 0 {
            p.red_zone.push(show(&mut formatter, i));
        }
        if is_mov_rbp_rsp(i) {
            framed = true;
            continue;
        }
        if framed {
            if matches!(i.mnemonic(), Mnemonic::Push | Mnemonic::Enter)
                || i.op0_register() == Register::RSP
            {
                lowered = true;
            }
            if below_rbp.is_none() && memory && i.memory_base() == Register::RBP && disp < 0 {
                below_rbp = Some(show(&mut formatter, i));
            }
        }
    }
    if let (true, false, Some(access)) = (framed, lowered, below_rbp) {
        p.red_zone
            .push(format!("{access} (below %rbp, %rsp never lowered)"));
    }
    p
}

/// Whether an A64 instruction word is a floating-point or Advanced SIMD one: the
/// top-level encoding class "data processing, scalar FP and SIMD" (op0 = x111), or a
/// load/store (op0 = x1x0) of a SIMD&FP register (V, bit 26, set).
pub fn a64_is_fp_simd(w: u32) -> bool {
    let op0 = (w >> 25) & 0xf;
    op0 & 0b0111 == 0b0111 || (op0 & 0b0101 == 0b0100 && (w >> 26) & 1 == 1)
}

/// Whether an A64 word accesses memory below sp without moving sp: STUR/LDUR with a
/// negative offset, or STP/LDP (signed offset form) with a negative offset, based on
/// sp.
pub fn a64_below_sp(w: u32) -> bool {
    let rn_is_sp = (w >> 5) & 0x1f == 31;
    let sext = |v: u32, bits: u32| ((v << (32 - bits)) as i32) >> (32 - bits);
    let unscaled = w & 0x3b20_0c00 == 0x3800_0000 && sext((w >> 12) & 0x1ff, 9) < 0;
    let pair = w & 0x3b80_0000 == 0x2900_0000 && sext((w >> 15) & 0x7f, 7) < 0;
    rn_is_sp && (unscaled || pair)
}

/// `add x29, sp, #imm` (`mov x29, sp` when imm is 0): the frame pointer set up.
pub fn a64_sets_frame(w: u32) -> bool {
    w & 0xff80_03ff == 0x9100_03fd
}

/// Whether an A64 word writes x18, which FreeBSD's arm64 kernel reserves for its
/// per-CPU data pointer (kern.mk: -ffixed-x18): the destination of the instruction
/// forms a compiler allocates registers to (add/sub, moves, logical, bitfield,
/// conditional select, multiply, adr/adrp, loads and load pairs).
pub fn a64_writes_x18(w: u32) -> bool {
    let rd = w & 0x1f;
    let rt2 = (w >> 10) & 0x1f;
    let data_processing = [
        (0x1f00_0000, 0x1100_0000), // add/sub (immediate)
        (0x1f80_0000, 0x1280_0000), // movn/movz/movk
        (0x1f80_0000, 0x1200_0000), // logical (immediate)
        (0x1f80_0000, 0x1300_0000), // bitfield
        (0x9f00_0000, 0x1000_0000), // adr
        (0x9f00_0000, 0x9000_0000), // adrp
        (0x1f00_0000, 0x0a00_0000), // logical (shifted register)
        (0x1f00_0000, 0x0b00_0000), // add/sub (shifted, extended register)
        (0x1f00_0000, 0x1a00_0000), // conditional select, 1/2-source
        (0x1f00_0000, 0x1b00_0000), // 3-source (multiply)
        (0x3f40_0000, 0x3940_0000), // load (unsigned offset)
        (0x3f40_0000, 0x3840_0000), // load (unscaled, pre/post-index, register)
        (0x3f00_0000, 0x1800_0000), // load (literal)
    ];
    let pair_load = w & 0x3c40_0000 == 0x2840_0000;
    (rd == 18 && data_processing.iter().any(|(m, v)| w & m == *v))
        || (pair_load && (rd == 18 || rt2 == 18))
}

/// BL or BLR.
pub fn a64_is_call(w: u32) -> bool {
    w & 0xfc00_0000 == 0x9400_0000 || w & 0xffff_fc1f == 0xd63f_0000
}

fn aarch64_function(f: &Function<'_>) -> CodeProblems {
    let mut p = CodeProblems::default();
    let mut frame = false;
    let mut call_before_frame = None;
    for (k, word) in f.bytes.chunks_exact(4).enumerate() {
        let offset = f.address + 4 * k as u64;
        // Data in code (literal pools) lies between `$d` and the next `$x`.
        let data = f
            .mapping
            .iter()
            .take_while(|(at, _)| *at <= offset)
            .last()
            .is_some_and(|(_, d)| *d);
        if data {
            continue;
        }
        let w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        p.instructions += 1;
        let at = format!("{}+{:#x}: {w:08x}", f.name, offset - f.address);
        if a64_is_fp_simd(w) {
            p.forbidden.push(format!("{at} (FP/SIMD)"));
        }
        if a64_below_sp(w) {
            p.red_zone.push(at.clone());
        }
        if a64_writes_x18(w) {
            p.forbidden
                .push(format!("{at} (writes x18, the kernel's per-CPU pointer)"));
        }
        if a64_sets_frame(w) {
            frame = true;
        } else if !frame && call_before_frame.is_none() && a64_is_call(w) {
            call_before_frame = Some(at);
        }
    }
    if !frame {
        p.frame
            .push(format!("{}: no `mov x29, sp` / `add x29, sp, #n`", f.name));
    } else if let Some(at) = call_before_frame {
        p.frame.push(format!("{at} (a call before the frame)"));
    }
    p
}

/// The mem* names an object must not define.
const MEM: &[&str] = &["memcpy", "memset", "memmove", "memcmp", "bcmp", "strlen"];

fn undefined(report: &mut Report, file: &Elf<'_>, arch: Arch, header: &Header) {
    let mut undefined: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined())
        .filter_map(|s| s.name().ok().filter(|n| !n.is_empty()).map(str::to_string))
        .collect();
    undefined.sort();
    undefined.dedup();
    let allowed =
        |n: &String| header.services.contains(n) || arch.kernel_mem().contains(&n.as_str());
    let bad: Vec<&String> = undefined.iter().filter(|n| !allowed(n)).collect();
    let own: Vec<String> = file
        .symbols()
        .filter(|s| !s.is_undefined() && s.is_global())
        .filter_map(|s| {
            s.name()
                .ok()
                .filter(|n| MEM.contains(n))
                .map(str::to_string)
        })
        .collect();
    let mut problems = Vec::new();
    if !bad.is_empty() {
        problems.push(format!(
            "symbols neither the shim nor the {} kernel provides: {}",
            arch.name(),
            bad.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
        ));
    }
    if !own.is_empty() {
        problems.push(format!(
            "the object defines its own {} (the kernel's must be used)",
            own.join(" ")
        ));
    }
    report.result(
        "undefined",
        &problems,
        format!(
            "{} symbols, all kpi_* of {} or the kernel's mem*",
            undefined.len(),
            crate::header::PATH
        ),
    );
}

/// Sections the kernel linker would mishandle, or that a no-unwind, no-TLS,
/// no-constructor build must not have. link_elf_obj.c runs .init_array/.ctors at
/// load, loads TLS sections as plain data, maps unwind tables uselessly, and has no
/// GOT or PLT; embedded bitcode is dead weight.
const BAD_SECTIONS: &[&str] = &[
    ".init_array",
    ".fini_array",
    ".preinit_array",
    ".ctors",
    ".dtors",
    ".tdata",
    ".tbss",
    ".eh_frame",
    ".eh_frame_hdr",
    ".gcc_except_table",
    ".got",
    ".got.plt",
    ".plt",
    ".dynamic",
    ".interp",
    ".llvmbc",
    ".llvmcmd",
    ".ARM.exidx",
    ".ARM.extab",
];

fn sections(report: &mut Report, file: &Elf<'_>) {
    let endian = file.endian();
    let mut problems = Vec::new();
    for section in file.sections() {
        let name = section.name().unwrap_or("?");
        let shdr = section.elf_section_header();
        let sh_type = shdr.sh_type(endian);
        let bad_name = BAD_SECTIONS
            .iter()
            .any(|b| name == *b || name.strip_prefix(b).is_some_and(|r| r.starts_with('.')));
        let bad_type = matches!(
            sh_type,
            elf::SHT_INIT_ARRAY
                | elf::SHT_FINI_ARRAY
                | elf::SHT_PREINIT_ARRAY
                | elf::SHT_X86_64_UNWIND
                | elf::SHT_DYNAMIC
                | elf::SHT_DYNSYM
        );
        let tls = shdr.sh_flags(endian) & u64::from(elf::SHF_TLS) != 0;
        if bad_name || bad_type || tls {
            problems.push(format!("{name} (type {sh_type:#x})"));
        }
    }
    let named = |pred: &dyn Fn(&object::read::elf::ElfSymbol64<'_, '_, Endianness>) -> bool| {
        file.symbols()
            .filter(|s| pred(s))
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let common = named(&|s| s.is_common());
    let tls = named(&|s| s.kind() == SymbolKind::Tls);
    if !common.is_empty() {
        problems.push(format!("common symbols: {}", common.join(" ")));
    }
    if !tls.is_empty() {
        problems.push(format!("thread-local symbols: {}", tls.join(" ")));
    }
    report.result(
        "sections",
        &problems,
        "no constructors, TLS, unwind tables, GOT/PLT, bitcode or commons".into(),
    );
}

fn panic_path(report: &mut Report, file: &Elf<'_>) {
    let found: Vec<String> = file
        .symbols()
        .filter_map(|s| {
            let name = s.name().ok()?;
            // core::panicking::* (mangled, legacy or v0), the panic handler.
            let bad = name.contains("panicking")
                || name == "rust_begin_unwind"
                || (name == "kpi_panic" && s.is_undefined());
            bad.then(|| name.to_string())
        })
        .take(5)
        .collect();
    report.result(
        "panic",
        &found
            .iter()
            .map(|n| format!("reaches the panic path: {n}"))
            .collect::<Vec<_>>(),
        "nothing reaches the panic path (no core::panicking, no panic handler, no kpi_panic)"
            .into(),
    );
}

fn text_size(file: &Elf<'_>) -> u64 {
    file.sections()
        .filter(|s| {
            s.elf_section_header().sh_flags(file.endian()) & u64::from(elf::SHF_EXECINSTR) != 0
        })
        .map(|s| s.size())
        .sum()
}

fn entry_points(report: &mut Report, file: &Elf<'_>, header: &Header) {
    let missing: Vec<&String> = header
        .entry_points
        .iter()
        .filter(|e| {
            !file.symbols().any(|s| {
                s.name().ok() == Some(e.as_str())
                    && !s.is_undefined()
                    && s.is_global()
                    && s.kind() == SymbolKind::Text
            })
        })
        .collect();
    if missing.is_empty() {
        report.ok(
            "entry-points",
            format!(
                "all {} ksyms_rs_* of {} defined",
                header.entry_points.len(),
                crate::header::PATH
            ),
        );
    } else {
        report.fail(
            "entry-points",
            format!(
                "not defined as global functions: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Encodings from `clang -target aarch64-unknown-freebsd -c -x assembler`.
    #[test]
    fn a64_words_are_classified() {
        let below = [
            0xf81f_83e0, /* stur x0, [sp, #-8] */
            0xa93f_07e0, /* stp x0, x1, [sp, #-16] */
        ];
        let not_below = [
            0xa9bf_7bfd, // stp x29, x30, [sp, #-16]!
            0xfd00_07e0, // str d0, [sp, #8]
            0xf940_0412, // ldr x18, [x0, #8]
        ];
        assert!(below.iter().all(|w| a64_below_sp(*w)));
        assert!(!not_below.iter().any(|w| a64_below_sp(*w)));

        assert!(a64_sets_frame(0x9100_03fd)); // mov x29, sp
        assert!(a64_sets_frame(0x9100_43fd)); // add x29, sp, #16
        assert!(!a64_sets_frame(0x9100_1240)); // add x0, x18, #4

        assert!(a64_is_call(0x9400_0000)); // bl
        assert!(a64_is_call(0xd63f_0060)); // blr x3
        assert!(!a64_is_call(0xa9bf_7bfd));

        let fp = [
            0x1e62_2820, /* fadd d0, d1, d2 */
            0x3dc0_0020, /* ldr q0, [x1] */
            0xfd00_07e0,
        ];
        assert!(fp.iter().all(|w| a64_is_fp_simd(*w)));
        assert!(![0xf940_0412u32, 0x9100_03fd, 0x9400_0000, 0xa9bf_7bfd]
            .iter()
            .any(|w| a64_is_fp_simd(*w)));

        let x18 = [
            0x9100_1032, // add x18, x1, #4
            0xaa02_03f2, // mov x18, x2
            0xf940_0412, // ldr x18, [x0, #8]
            0x9000_0012, // adrp x18, foo
            0xd280_0032, // movz x18, #1
            0xa940_4c12, // ldp x18, x19, [x0]
        ];
        assert!(x18.iter().all(|w| a64_writes_x18(*w)));
        let reads_x18 = [
            0x9100_1240u32, /* add x0, x18, #4 */
            0xf940_0640,    /* ldr x0, [x18, #8] */
        ];
        assert!(!reads_x18.iter().any(|w| a64_writes_x18(*w)));
    }
}
