//! What differs between the architectures the module is built for: one table.

use object::elf;
use serde_json::{json, Value};

/// A FreeBSD architecture the Rust half is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Aarch64];

    /// Accepts FreeBSD's MACHINE_ARCH (`amd64`, `aarch64`), its MACHINE (`arm64`) and
    /// Rust's names (`x86_64`).
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The architecture of the machine this runs on, when the module exists for it.
    pub fn host() -> Option<Arch> {
        Arch::from_name(std::env::consts::ARCH)
    }

    /// FreeBSD's MACHINE_ARCH: the name of build/<name>/ksyms_rs.o.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// rustc's bare-metal target the kernel target is derived from.
    pub fn base_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
        }
    }

    /// The kernel target's name (its spec file's stem). It must not contain `-none`:
    /// compiler_builtins then builds its own memcpy & co. (its build.rs turns its
    /// `mem` feature on for every `*-none*` target), which would shadow the kernel's.
    pub fn target_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-ksyms-freebsd",
            Arch::Aarch64 => "aarch64-ksyms-freebsd",
        }
    }

    /// The kernel's code generation rules, as rustc target-spec settings laid over the
    /// base target's (sys/conf/kern.mk and kmod.mk of FreeBSD 13.2 and 14.2).
    pub fn spec_settings(self) -> Vec<(&'static str, Value)> {
        let mut settings = vec![
            // DTrace stack(), lockstat -s, DDB and kgdb walk frame pointers: FreeBSD
            // builds modules with -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer.
            ("frame-pointer", json!("always")),
            ("disable-redzone", json!(true)),
            ("panic-strategy", json!("abort")),
            ("relro-level", json!("off")),
            ("default-uwtable", json!(false)),
        ];
        match self {
            // Relocatable modules in the top 2 GiB, no GOT: the kernel linker applies
            // no GOTPCREL relocation.
            Arch::Amd64 => settings.extend([
                ("code-model", json!("kernel")),
                ("relocation-model", json!("static")),
            ]),
            // arm64 modules are shared objects (kmod.mk: -fPIC, ld -Bshareable).
            Arch::Aarch64 => settings.push(("relocation-model", json!("pic"))),
        }
        settings
    }

    /// Target features the base target must keep disabled: the kernel does not save
    /// floating-point or vector state for its own code.
    pub fn required_features(self) -> &'static [&'static str] {
        match self {
            Arch::Amd64 => &["-mmx", "-sse", "-sse2", "-avx", "+soft-float"],
            Arch::Aarch64 => &["-neon"],
        }
    }

    /// Target features added to the base target's.
    pub fn extra_features(self) -> &'static [&'static str] {
        match self {
            Arch::Amd64 => &[],
            // kern.mk: -mgeneral-regs-only (no FP/SIMD registers at all, also not for
            // moves) and -ffixed-x18 (x18 holds the per-CPU data pointer).
            Arch::Aarch64 => &["-fp-armv8", "+reserve-x18"],
        }
    }

    /// ld's emulation for `ld -r`, understood by GNU ld and ld.lld.
    pub fn ld_emulation(self) -> &'static str {
        match self {
            Arch::Amd64 => "elf_x86_64",
            Arch::Aarch64 => "aarch64elf",
        }
    }

    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => elf::EM_X86_64,
            Arch::Aarch64 => elf::EM_AARCH64,
        }
    }

    /// Whether FreeBSD links this architecture's modules as shared objects (kmod.mk:
    /// "amd64 and mips use direct linking for kmod, all others use shared binaries"),
    /// so that what the kernel linker applies are the shared object's dynamic
    /// relocations rather than the object's own.
    pub fn shared_modules(self) -> bool {
        self == Arch::Aarch64
    }

    /// The mem* functions the kernel has, which the object may call.
    /// amd64 (sys/amd64/amd64/support.S, 13.2 and 14.2): memcpy, memset, memmove
    /// (ifuncs) and memcmp; no bcmp (sys/systm.h makes it a macro). arm64
    /// (conf/files.arm64): memcpy/memmove, memset, memcmp (assembly) and
    /// libkern/bcmp.c.
    pub fn kernel_mem(self) -> &'static [&'static str] {
        match self {
            Arch::Amd64 => &["memcpy", "memset", "memmove", "memcmp"],
            Arch::Aarch64 => &["memcpy", "memset", "memmove", "memcmp", "bcmp"],
        }
    }

    /// The relocation types the kernel linker applies to a module:
    /// sys/amd64/amd64/elf_machdep.c (the object's relocations) and
    /// sys/arm64/arm64/elf_machdep.c (the shared object's dynamic relocations),
    /// elf_reloc_internal, in 13.2 and 14.2.
    pub fn applied_relocations(self) -> &'static [u32] {
        match self {
            Arch::Amd64 => &[
                elf::R_X86_64_64,
                elf::R_X86_64_PC32,
                elf::R_X86_64_PLT32,
                elf::R_X86_64_32S,
            ],
            Arch::Aarch64 => &[
                elf::R_AARCH64_NONE,
                elf::R_AARCH64_RELATIVE,
                elf::R_AARCH64_ABS64,
                elf::R_AARCH64_GLOB_DAT,
                elf::R_AARCH64_JUMP_SLOT,
                elf::R_AARCH64_IRELATIVE,
                elf::R_AARCH64_CALL26,
                elf::R_AARCH64_JUMP26,
                elf::R_AARCH64_CONDBR19,
                elf::R_AARCH64_TSTBR14,
            ],
        }
    }

    /// A relocation type's name, for messages.
    pub fn relocation_name(self, r_type: u32) -> String {
        let known: &[(u32, &str)] = match self {
            Arch::Amd64 => &[
                (elf::R_X86_64_64, "R_X86_64_64"),
                (elf::R_X86_64_PC32, "R_X86_64_PC32"),
                (elf::R_X86_64_PLT32, "R_X86_64_PLT32"),
                (elf::R_X86_64_32S, "R_X86_64_32S"),
                (elf::R_X86_64_32, "R_X86_64_32"),
                (elf::R_X86_64_GOTPCREL, "R_X86_64_GOTPCREL"),
                (elf::R_X86_64_GOTPCRELX, "R_X86_64_GOTPCRELX"),
                (elf::R_X86_64_REX_GOTPCRELX, "R_X86_64_REX_GOTPCRELX"),
                (elf::R_X86_64_TPOFF32, "R_X86_64_TPOFF32"),
            ],
            Arch::Aarch64 => &[
                (elf::R_AARCH64_NONE, "R_AARCH64_NONE"),
                (elf::R_AARCH64_RELATIVE, "R_AARCH64_RELATIVE"),
                (elf::R_AARCH64_ABS64, "R_AARCH64_ABS64"),
                (elf::R_AARCH64_GLOB_DAT, "R_AARCH64_GLOB_DAT"),
                (elf::R_AARCH64_JUMP_SLOT, "R_AARCH64_JUMP_SLOT"),
                (elf::R_AARCH64_IRELATIVE, "R_AARCH64_IRELATIVE"),
                (elf::R_AARCH64_CALL26, "R_AARCH64_CALL26"),
                (elf::R_AARCH64_JUMP26, "R_AARCH64_JUMP26"),
                (elf::R_AARCH64_CONDBR19, "R_AARCH64_CONDBR19"),
                (elf::R_AARCH64_TSTBR14, "R_AARCH64_TSTBR14"),
                (elf::R_AARCH64_COPY, "R_AARCH64_COPY"),
                (elf::R_AARCH64_TLS_TPREL, "R_AARCH64_TLS_TPREL"),
                (elf::R_AARCH64_TLSDESC, "R_AARCH64_TLSDESC"),
            ],
        };
        known
            .iter()
            .find(|(t, _)| *t == r_type)
            .map_or_else(|| format!("type {r_type}"), |(_, n)| (*n).to_string())
    }
}
