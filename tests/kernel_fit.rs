//! The kernel-fit checks of `kmod/cargo-kernel.sh` catch what they claim to catch.
//!
//! `make test` runs `sh kmod/cargo-kernel.sh --check` on the real Rust object; these
//! tests feed the same checks (`--check-object`) small C objects built with clang, one
//! per violation (a GOT relocation, SSE, x87, the red zone, a symbol the kernel does
//! not have, a constructor, TLS, unwind tables, an own memcpy, too much code), and a
//! well-behaved one that must pass. Each bad object must fail exactly the check meant
//! for it, so a check that silently stopped working shows up here.
//!
//! Needs clang, readelf and objdump (binutils); a missing tool fails the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel's own code generation flags for amd64 (sys/conf/kern.mk, FreeBSD 13.2).
const KERNEL_FLAGS: &[&str] = &[
    "-mcmodel=kernel",
    "-mno-red-zone",
    "-mno-mmx",
    "-mno-sse",
    "-msoft-float",
    "-fno-asynchronous-unwind-tables",
    "-fno-pic",
];

/// Which checks exist (the names the script prints in `KERNEL-FIT FAIL (name)`).
const CHECKS: &[&str] = &[
    "object",
    "relocations",
    "instructions",
    "red-zone",
    "undefined",
    "sections",
    "text-size",
];

/// The well-behaved module code: calls the shim, reads and writes kernel data.
const GOOD: &str = r#"
int kpi_lock(void);
void kpi_unlock(void);
int kpi_lf_id(void *lf);
extern long counter;
static long table[4];
long *where = &table[1];

int
good(void *lf, int i)
{
	int id;

	kpi_lock();
	id = kpi_lf_id(lf);
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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksyms-kernel-fit-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `source` with clang for amd64 with `flags`, into a relocatable object.
fn compile(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let dir = scratch(name);
    let c = dir.join(format!("{name}.c"));
    let o = dir.join(format!("{name}.o"));
    fs::write(&c, source).unwrap();
    let out = Command::new("clang")
        .args([
            "--target=x86_64-unknown-freebsd13.2",
            "-ffreestanding",
            "-nostdinc",
            "-O2",
            "-c",
        ])
        .args(flags)
        .arg("-o")
        .arg(&o)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("cannot run clang ({e}): install clang (CI does)"));
    assert!(
        out.status.success(),
        "clang failed on {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    o
}

fn check_object(object: &Path, env: &[(&str, &str)]) -> Outcome {
    let out = Command::new("sh")
        .arg(root().join("kmod/cargo-kernel.sh"))
        .arg("--check-object")
        .arg(object)
        .envs(env.iter().copied())
        .output()
        .expect("cannot run sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for tool in ["readelf", "objdump"] {
        assert!(
            !stderr.contains(&format!("{tool} not found")),
            "{tool} is missing: install binutils (CI does)\n{stderr}"
        );
    }
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

/// `source` compiled with the kernel flags plus `extra` fails exactly `check`.
fn fails_only(name: &str, source: &str, extra: &[&str], check: &str, needle: &str) {
    let mut flags = KERNEL_FLAGS.to_vec();
    flags.extend_from_slice(extra);
    // A later -m flag wins in clang: extra flags can undo the kernel ones.
    let object = compile(name, source, &flags);
    let outcome = check_object(&object, &[]);
    assert!(
        !outcome.ok,
        "{name}: the checks passed an object they must reject\n{}{}",
        outcome.stdout, outcome.stderr
    );
    assert_eq!(
        outcome.failed,
        vec![check.to_string()],
        "{name}: wrong checks failed\n{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(needle),
        "{name}: the failure does not name {needle:?}\n{}",
        outcome.stderr
    );
    fs::remove_dir_all(object.parent().unwrap()).ok();
}

#[test]
fn a_well_behaved_object_passes_every_check() {
    let object = compile("good", GOOD, KERNEL_FLAGS);
    let outcome = check_object(&object, &[]);
    assert!(
        outcome.ok,
        "the good object was rejected\n{}{}",
        outcome.stdout, outcome.stderr
    );
    for check in [
        "relocations",
        "instructions",
        "undefined",
        "sections",
        "text-size",
    ] {
        assert!(
            outcome.stdout.contains(&format!("kernel-fit ok ({check})")),
            "no pass line for {check}\n{}",
            outcome.stdout
        );
    }
    // What the good object has must be what the relocation check reports.
    assert!(
        outcome.stdout.contains("R_X86_64_PLT32"),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains("R_X86_64_32S"),
        "{}",
        outcome.stdout
    );
    fs::remove_dir_all(object.parent().unwrap()).ok();
}

#[test]
fn got_relocations_fail() {
    // PIC code reaches globals through the GOT: R_X86_64_REX_GOTPCRELX, which
    // FreeBSD's kernel linker does not apply.
    fails_only("pic", GOOD, &["-fPIC"], "relocations", "GOTPCREL");
}

#[test]
fn small_code_model_fails() {
    // An address as a zero-extended 32-bit immediate: R_X86_64_32, not 32S.
    let src = "long table[4];\nlong *base(void) { return table; }\n";
    fails_only(
        "small",
        src,
        &["-mcmodel=small"],
        "relocations",
        "R_X86_64_32 x1",
    );
}

#[test]
fn sse_fails() {
    let src = "double scale(double x, double y) { return x * y + 1.5; }\n";
    fails_only(
        "sse",
        src,
        &["-msse2", "-mno-soft-float"],
        "instructions",
        "%xmm",
    );
}

#[test]
fn x87_fails() {
    let src = "long double scale(long double x) { return x * 3; }\n";
    fails_only("x87", src, &["-mno-soft-float"], "instructions", "FPU/SIMD");
}

#[test]
fn red_zone_fails() {
    // A leaf function with a stack buffer keeps it below %rsp when allowed to.
    let src = r#"
int
leaf(int i, int v)
{
	volatile int buf[16];

	buf[i & 15] = v;
	return (buf[(i + 1) & 15]);
}
"#;
    // FreeBSD's default keeps the frame pointer: the buffer is below %rbp == %rsp.
    fails_only("redzone-fp", src, &["-mred-zone"], "red-zone", "(%rbp,");
    fails_only(
        "redzone-nofp",
        src,
        &["-mred-zone", "-fomit-frame-pointer"],
        "red-zone",
        "(%rsp,",
    );
}

#[test]
fn symbols_the_kernel_lacks_fail() {
    // bcmp: FreeBSD 13.2 amd64 has no such function; kpi_bogus: not in ksyms_kpi.h.
    let src = r#"
int bcmp(const void *, const void *, unsigned long);
int kpi_bogus(void);
int
f(const void *a, const void *b)
{
	return (bcmp(a, b, 16) + kpi_bogus());
}
"#;
    fails_only("undef", src, &[], "undefined", "bcmp kpi_bogus");
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
    let object = compile("mem", src, KERNEL_FLAGS);
    let outcome = check_object(&object, &[]);
    assert!(outcome.ok, "{}{}", outcome.stdout, outcome.stderr);
    assert!(
        outcome
            .stdout
            .contains("kernel-fit ok (undefined): 4 symbols"),
        "{}",
        outcome.stdout
    );
    fs::remove_dir_all(object.parent().unwrap()).ok();
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
    fails_only(
        "ownmem",
        src,
        &["-fno-builtin"],
        "undefined",
        "defines its own memcpy",
    );
}

#[test]
fn constructors_fail() {
    // (A constructor that only stores a constant is folded away by clang.)
    let src = "void kpi_lock(void);\n__attribute__((constructor)) static void init(void) { kpi_lock(); }\n";
    fails_only("ctor", src, &[], "sections", ".init_array");
}

#[test]
fn thread_locals_fail() {
    let src = "__thread int per_thread;\nint get(void) { return per_thread; }\n";
    // TLS also brings its own relocation type (TPOFF32): both checks fire.
    let object = compile("tls", src, KERNEL_FLAGS);
    let outcome = check_object(&object, &[]);
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
    fs::remove_dir_all(object.parent().unwrap()).ok();
}

#[test]
fn unwind_tables_fail() {
    let src = "int kpi_lock(void);\nint f(void) { return kpi_lock() + 1; }\n";
    fails_only(
        "unwind",
        src,
        &["-fasynchronous-unwind-tables"],
        "sections",
        ".eh_frame",
    );
}

#[test]
fn too_much_code_fails() {
    let object = compile("big", GOOD, KERNEL_FLAGS);
    let outcome = check_object(&object, &[("KSYMS_TEXT_LIMIT", "16")]);
    assert!(!outcome.ok, "{}", outcome.stdout);
    assert_eq!(
        outcome.failed,
        vec!["text-size".to_string()],
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("limit 16"), "{}", outcome.stderr);
    fs::remove_dir_all(object.parent().unwrap()).ok();
}

#[test]
fn a_non_object_fails() {
    let dir = scratch("notobj");
    let path = dir.join("not.o");
    fs::write(&path, b"\x7fELF but not really").unwrap();
    let outcome = check_object(&path, &[]);
    assert!(!outcome.ok, "{}", outcome.stdout);
    assert_eq!(
        outcome.failed,
        vec!["object".to_string()],
        "{}",
        outcome.stderr
    );
    fs::remove_dir_all(dir).ok();
}
