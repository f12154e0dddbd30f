//! The kernel-fit checks catch what they claim to catch, on both architectures.
//!
//! `kbuild build` runs the checks on the real Rust object; these tests feed `kbuild
//! check` small objects compiled with clang for FreeBSD (C with the kernel's flags,
//! or assembly), one per violation, and a well-behaved one that must pass. Each bad
//! object must fail exactly the check meant for it, so a check that silently stopped
//! working shows up here.
//!
//! Needs clang and ld.lld (CI installs both); a missing tool fails the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ksyms_kbuild::arch::Arch;
use ksyms_kbuild::fit::CHECKS;

/// The kernel's own code generation flags (sys/conf/kern.mk and kmod.mk, 13.2/14.2).
fn kernel_flags(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Amd64 => &[
            "-mcmodel=kernel",
            "-mno-red-zone",
            "-mno-mmx",
            "-mno-sse",
            "-msoft-float",
            "-fno-asynchronous-unwind-tables",
            "-fno-pic",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
        ],
        Arch::Aarch64 => &[
            "-mgeneral-regs-only",
            "-ffixed-x18",
            "-fPIC",
            "-fno-asynchronous-unwind-tables",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
        ],
    }
}

/// The well-behaved module code: calls the shim, reads and writes kernel data.
const GOOD: &str = r#"
int kpi_lock(void);
void kpi_unlock(void);
int kpi_set_cdevpriv(void *priv);
extern long counter;
static long table[4];
long *where = &table[1];

int
good(void *lf, int i)
{
	int id;

	kpi_lock();
	id = kpi_set_cdevpriv(lf);
	counter += id;
	table[i & 3] = id;
	kpi_unlock();
	return (id + (int)*where);
}
long counter;
"#;

struct Outcome {
    ok: bool,
    failed: Vec<String>,
    stdout: String,
    stderr: String,
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksyms-kbuild-fit-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn triple(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "--target=x86_64-unknown-freebsd13.2",
        Arch::Aarch64 => "--target=aarch64-unknown-freebsd13.2",
    }
}

/// Compiles `source` (C, or assembly when `lang` is "assembler") for `arch` with
/// `flags` into a relocatable object.
fn compile_as(arch: Arch, name: &str, lang: &str, source: &str, flags: &[&str]) -> PathBuf {
    let dir = scratch(&format!("{}-{name}", arch.name()));
    let src = dir.join(format!("{name}.src"));
    let o = dir.join(format!("{name}.o"));
    fs::write(&src, source).unwrap();
    let out = Command::new("clang")
        .args([
            triple(arch),
            "-ffreestanding",
            "-nostdinc",
            "-O2",
            "-c",
            "-x",
            lang,
        ])
        .args(flags)
        .arg("-o")
        .arg(&o)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run clang ({e}): install clang (CI does)"));
    assert!(
        out.status.success(),
        "clang failed on {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    o
}

fn compile(arch: Arch, name: &str, source: &str, extra: &[&str]) -> PathBuf {
    // A later flag wins in clang: extra flags can undo the kernel ones.
    let mut flags = kernel_flags(arch).to_vec();
    flags.extend_from_slice(extra);
    compile_as(arch, name, "c", source, &flags)
}

fn check(arch: Arch, object: &Path, extra: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_kbuild"))
        .args(["check", "--arch", arch.name()])
        .args(extra)
        .arg(object)
        .output()
        .expect("cannot run kbuild");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let failed = CHECKS
        .iter()
        .filter(|c| stderr.contains(&format!("KERNEL-FIT FAIL ({c})")))
        .map(|c| c.to_string())
        .collect();
    Outcome {
        ok: out.status.success(),
        failed,
        stdout,
        stderr,
    }
}

fn cleanup(object: &Path) {
    fs::remove_dir_all(object.parent().unwrap()).ok();
}

/// `object` fails exactly `check` (run with `args`), naming `needle`.
fn fails_only_object(
    arch: Arch,
    name: &str,
    object: &Path,
    args: &[&str],
    check_name: &str,
    needle: &str,
) {
    let outcome = check(arch, object, args);
    assert!(
        !outcome.ok,
        "{name}: the checks passed an object they must reject\n{}{}",
        outcome.stdout, outcome.stderr
    );
    assert_eq!(
        outcome.failed,
        vec![check_name.to_string()],
        "{name}: wrong checks failed\n{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(needle),
        "{name}: the failure does not name {needle:?}\n{}",
        outcome.stderr
    );
    cleanup(object);
}

fn fails_only(
    arch: Arch,
    name: &str,
    source: &str,
    extra: &[&str],
    check_name: &str,
    needle: &str,
) {
    let object = compile(arch, name, source, extra);
    fails_only_object(arch, name, &object, &[], check_name, needle);
}

#[test]
fn a_well_behaved_object_passes_every_check() {
    for (arch, relocs) in [
        (Arch::Amd64, &["R_X86_64_PLT32", "R_X86_64_32S"][..]),
        // The shared link resolves the calls to the shim through the PLT and
        // relocates the pointer in `where` against the module's own base.
        (
            Arch::Aarch64,
            &["R_AARCH64_JUMP_SLOT", "R_AARCH64_RELATIVE"][..],
        ),
    ] {
        let object = compile(arch, "good", GOOD, &[]);
        let outcome = check(arch, &object, &[]);
        assert!(
            outcome.ok,
            "{arch:?}: the good object was rejected\n{}{}",
            outcome.stdout, outcome.stderr
        );
        for c in CHECKS.iter().filter(|c| **c != "entry-points") {
            assert!(
                outcome.stdout.contains(&format!("kernel-fit ok ({c})")),
                "{arch:?}: no pass line for {c}\n{}",
                outcome.stdout
            );
        }
        // What the good object has must be what the relocation check reports.
        for r in relocs {
            assert!(
                outcome.stdout.contains(r),
                "{arch:?}: {r}\n{}",
                outcome.stdout
            );
        }
        cleanup(&object);
    }
}

#[test]
fn got_relocations_fail_on_amd64() {
    // PIC code reaches globals through the GOT: R_X86_64_REX_GOTPCRELX, which
    // FreeBSD's kernel linker does not apply.
    fails_only(
        Arch::Amd64,
        "pic",
        GOOD,
        &["-fPIC"],
        "relocations",
        "GOTPCREL",
    );
}

#[test]
fn small_code_model_fails_on_amd64() {
    // An address as a zero-extended 32-bit immediate: R_X86_64_32, not 32S.
    let src = "long table[4];\nlong *base(void) { return table; }\n";
    fails_only(
        Arch::Amd64,
        "small",
        src,
        &["-mcmodel=small"],
        "relocations",
        "R_X86_64_32 x1",
    );
}

#[test]
fn non_pic_code_fails_the_arm64_shared_link() {
    // arm64 modules are shared objects: an adrp to a preemptible global cannot be
    // linked into one, so kldload would never see this module.
    fails_only(
        Arch::Aarch64,
        "nopic",
        GOOD,
        &["-fno-pic"],
        "relocations",
        "-fPIC",
    );
}

#[test]
fn floating_point_fails() {
    let src = "double scale(double x, double y) { return x * y + 1.5; }\n";
    fails_only(
        Arch::Amd64,
        "sse",
        src,
        &["-msse2", "-mno-soft-float"],
        "instructions",
        "%xmm",
    );
    let src = "long double scale(long double x) { return x * 3; }\n";
    fails_only(
        Arch::Amd64,
        "x87",
        src,
        &["-mno-soft-float"],
        "instructions",
        "FPU",
    );
    // Without -mgeneral-regs-only, clang uses the FP/SIMD registers for doubles.
    let object = compile_as(
        Arch::Aarch64,
        "fp",
        "c",
        "double scale(double x, double y) { return x * y + 1.5; }\n",
        &[
            "-fPIC",
            "-ffixed-x18",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-fno-asynchronous-unwind-tables",
        ],
    );
    fails_only_object(Arch::Aarch64, "fp", &object, &[], "instructions", "FP/SIMD");
}

#[test]
fn the_red_zone_fails() {
    // A leaf function with a stack buffer keeps it below the stack pointer when
    // allowed to.
    let src = r#"
int
leaf(int i, int v)
{
	volatile int buf[16];

	buf[i & 15] = v;
	return (buf[(i + 1) & 15]);
}
"#;
    // With a frame pointer: the buffer is below %rbp == %rsp.
    fails_only(
        Arch::Amd64,
        "redzone-fp",
        src,
        &["-mred-zone"],
        "red-zone",
        "(%rbp,",
    );
    // arm64 compilers keep no red zone: written by hand.
    let asm = "\t.text\n\t.globl leaf\n\t.type leaf,%function\nleaf:\n\
               \tstp x29, x30, [sp, #-16]!\n\tmov x29, sp\n\tstur x0, [sp, #-8]\n\
               \tldp x29, x30, [sp], #16\n\tret\n\t.size leaf, .-leaf\n";
    let object = compile_as(Arch::Aarch64, "redzone", "assembler", asm, &[]);
    fails_only_object(
        Arch::Aarch64,
        "redzone",
        &object,
        &[],
        "red-zone",
        "leaf+0x8",
    );
}

#[test]
fn a_function_without_a_frame_pointer_fails() {
    // DTrace's stack(), lockstat -s, DDB and kgdb walk frame pointers: a function
    // that calls without one hides its callers.
    for arch in Arch::ALL {
        fails_only(
            arch,
            "nofp",
            GOOD,
            &["-fomit-frame-pointer"],
            "frame-pointers",
            "good",
        );
    }
}

#[test]
fn writing_x18_fails_on_arm64() {
    // x18 is the arm64 kernel's per-CPU data pointer (kern.mk: -ffixed-x18).
    let asm = "\t.text\n\t.globl f\n\t.type f,%function\nf:\n\
               \tstp x29, x30, [sp, #-16]!\n\tmov x29, sp\n\tadd x18, x0, #4\n\
               \tldp x29, x30, [sp], #16\n\tret\n\t.size f, .-f\n";
    let object = compile_as(Arch::Aarch64, "x18", "assembler", asm, &[]);
    fails_only_object(
        Arch::Aarch64,
        "x18",
        &object,
        &[],
        "instructions",
        "writes x18",
    );
}

#[test]
fn symbols_the_kernel_lacks_fail() {
    // bcmp: FreeBSD's amd64 kernel has no such function (arm64's has);
    // kpi_bogus: not in ksyms_kpi.h.
    let src = r#"
int bcmp(const void *, const void *, unsigned long);
int kpi_bogus(void);
int
f(const void *a, const void *b)
{
	return (bcmp(a, b, 16) + kpi_bogus());
}
"#;
    fails_only(
        Arch::Amd64,
        "undef",
        src,
        &[],
        "undefined",
        "bcmp kpi_bogus",
    );
    fails_only(Arch::Aarch64, "undef", src, &[], "undefined", "kpi_bogus");
}

#[test]
fn kernel_mem_functions_are_allowed_undefined() {
    let src = r#"
typedef unsigned long size_t;
void *memcpy(void *, const void *, size_t);
void *memset(void *, int, size_t);
void *memmove(void *, const void *, size_t);
int memcmp(const void *, const void *, size_t);
int
f(char *a, char *b, size_t n)
{
	memcpy(a, b, n);
	memmove(a + 1, a, n);
	memset(b, 0, n);
	return (memcmp(a, b, n));
}
"#;
    for arch in Arch::ALL {
        let object = compile(arch, "mem", src, &[]);
        let outcome = check(arch, &object, &[]);
        assert!(outcome.ok, "{arch:?}\n{}{}", outcome.stdout, outcome.stderr);
        assert!(
            outcome
                .stdout
                .contains("kernel-fit ok (undefined): 4 symbols"),
            "{arch:?}\n{}",
            outcome.stdout
        );
        cleanup(&object);
    }
}

#[test]
fn an_own_memcpy_fails() {
    let src = r#"
typedef unsigned long size_t;
void *
memcpy(void *d, const void *s, size_t n)
{
	char *dp = d;
	const char *sp = s;

	while (n-- > 0)
		*dp++ = *sp++;
	return (d);
}
"#;
    for arch in Arch::ALL {
        fails_only(
            arch,
            "ownmem",
            src,
            &["-fno-builtin"],
            "undefined",
            "defines its own memcpy",
        );
    }
}

#[test]
fn the_panic_path_fails() {
    let src = "void kpi_panic(const char *, unsigned long) __attribute__((__noreturn__));\n\
               int kpi_lock(void);\n\
               int f(int x) { if (x > 3) kpi_panic(\"x\", 1); return kpi_lock() + x; }\n";
    for arch in Arch::ALL {
        fails_only(arch, "panic", src, &[], "panic", "kpi_panic");
    }
}

#[test]
fn constructors_fail() {
    // (A constructor that only stores a constant is folded away by clang.)
    let src = "void kpi_lock(void);\n__attribute__((constructor)) static void init(void) { kpi_lock(); }\n";
    for arch in Arch::ALL {
        fails_only(arch, "ctor", src, &[], "sections", ".init_array");
    }
}

#[test]
fn thread_locals_fail() {
    let src = "__thread int per_thread;\nint get(void) { return per_thread; }\n";
    // TLS also brings relocation types of its own: both checks fire.
    for arch in Arch::ALL {
        let object = compile(arch, "tls", src, &[]);
        let outcome = check(arch, &object, &[]);
        assert!(!outcome.ok);
        assert!(
            outcome.failed.contains(&"sections".to_string()),
            "{}",
            outcome.stderr
        );
        assert!(outcome.stderr.contains(".tbss"), "{}", outcome.stderr);
        assert!(
            outcome.stderr.contains("thread-local symbols: per_thread"),
            "{}",
            outcome.stderr
        );
        cleanup(&object);
    }
}

#[test]
fn unwind_tables_fail() {
    let src = "int kpi_lock(void);\nint f(void) { return kpi_lock() + 1; }\n";
    for arch in Arch::ALL {
        fails_only(
            arch,
            "unwind",
            src,
            &["-fasynchronous-unwind-tables"],
            "sections",
            ".eh_frame",
        );
    }
}

#[test]
fn too_much_code_fails() {
    for arch in Arch::ALL {
        let object = compile(arch, "big", GOOD, &[]);
        let args = ["--text-limit", "16"];
        fails_only_object(arch, "big", &object, &args, "text-size", "limit 16");
    }
}

#[test]
fn a_non_object_or_the_wrong_machine_fails() {
    let dir = scratch("notobj");
    let path = dir.join("not.o");
    fs::write(&path, b"\x7fELF but not really").unwrap();
    // Removes `dir`, the object's directory.
    fails_only_object(
        Arch::Amd64,
        "notobj",
        &path,
        &[],
        "object",
        "not a 64-bit ELF file",
    );

    let object = compile(Arch::Aarch64, "machine", GOOD, &[]);
    fails_only_object(
        Arch::Amd64,
        "machine",
        &object,
        &[],
        "object",
        "e_machine 183",
    );
}
