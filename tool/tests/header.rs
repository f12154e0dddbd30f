//! include/sys/ksyms.h, compiled by clang for FreeBSD targets.
//!
//! There are no FreeBSD system headers on a Linux machine, and Linux's own _IOR
//! encodes requests differently. So the test compiles with `-nostdinc` (clang's
//! own <stddef.h> only) against a <sys/ioccom.h> that spells out FreeBSD's
//! encoding (IOC_OUT 0x40000000, 13-bit parameter length at bit 16, group at bit
//! 8, number at bit 0) and a <sys/types.h> that only provides size_t, then asserts
//! at compile time that the header's requests have FreeBSD's numbers: for amd64
//! and, where size_t and pointers are 4 bytes, for i386.

use std::path::{Path, PathBuf};
use std::process::Command;

const IOCCOM_H: &str = "\
#ifndef _SYS_IOCCOM_H_
#define _SYS_IOCCOM_H_
#define IOCPARM_SHIFT 13
#define IOCPARM_MASK ((1 << IOCPARM_SHIFT) - 1)
#define IOC_OUT 0x40000000UL
#define _IOC(inout, group, num, len) ((unsigned long) \\
    ((inout) | (((len) & IOCPARM_MASK) << 16) | ((group) << 8) | (num)))
#define _IOR(g, n, t) _IOC(IOC_OUT, (g), (n), sizeof(t))
#endif
";

const TYPES_H: &str = "\
#ifndef _SYS_TYPES_H_
#define _SYS_TYPES_H_
#include <stddef.h>
#endif
";

const PROGRAM_C: &str = "\
#include <sys/types.h>
#include <sys/ksyms.h>
#include <sys/ksyms.h> /* the include guard holds */
_Static_assert(KIOCGSIZE == EXPECT_SIZE, \"KIOCGSIZE\");
_Static_assert(KIOCGADDR == EXPECT_ADDR, \"KIOCGADDR\");
int
main(void)
{
\tunsigned long req[2] = { KIOCGSIZE, KIOCGADDR };
\treturn (req[0] == req[1]);
}
";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn clang(args: &[String]) -> (bool, String) {
    let o = Command::new("clang")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run clang: {e}; install it (apt-get install clang)"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn resource_include() -> String {
    let o = Command::new("clang")
        .arg("-print-resource-dir")
        .output()
        .unwrap_or_else(|e| panic!("cannot run clang: {e}; install it (apt-get install clang)"));
    assert!(o.status.success());
    format!("{}/include", String::from_utf8_lossy(&o.stdout).trim())
}

/// Compiles the program for `target` expecting `size`/`addr`; returns success and
/// clang's messages.
fn compile(dir: &Path, target: &str, size: u64, addr: u64) -> (bool, String) {
    let args: Vec<String> = vec![
        format!("--target={target}"),
        "-fsyntax-only".into(),
        "-std=c11".into(),
        "-Wall".into(),
        "-Wextra".into(),
        "-Werror".into(),
        "-nostdinc".into(),
        "-isystem".into(),
        resource_include(),
        "-I".into(),
        dir.join("fake").display().to_string(),
        "-I".into(),
        repo().join("include").display().to_string(),
        format!("-DEXPECT_SIZE={size:#x}UL"),
        format!("-DEXPECT_ADDR={addr:#x}UL"),
        dir.join("program.c").display().to_string(),
    ];
    clang(&args)
}

#[test]
fn header_has_freebsds_request_numbers() {
    let dir = std::env::temp_dir().join(format!("ksyms-header-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("fake/sys")).unwrap();
    std::fs::write(dir.join("fake/sys/ioccom.h"), IOCCOM_H).unwrap();
    std::fs::write(dir.join("fake/sys/types.h"), TYPES_H).unwrap();
    std::fs::write(dir.join("program.c"), PROGRAM_C).unwrap();

    // FreeBSD's numbers: _IOR('l', n, 8-byte type) and _IOR('l', n, 4-byte type).
    let (ok, msg) = compile(&dir, "x86_64-unknown-freebsd13", 0x4008_6c01, 0x4008_6c02);
    assert!(ok, "amd64: {msg}");
    let (ok, msg) = compile(&dir, "i386-unknown-freebsd13", 0x4004_6c01, 0x4004_6c02);
    assert!(ok, "i386: {msg}");

    // The assertions are really evaluated: a wrong expectation fails to compile.
    let (ok, msg) = compile(&dir, "x86_64-unknown-freebsd13", 0x4004_6c01, 0x4008_6c02);
    assert!(!ok && msg.contains("KIOCGSIZE"), "{msg}");
    let (ok, msg) = compile(&dir, "x86_64-unknown-freebsd13", 0x4008_6c01, 0x4008_6c03);
    assert!(!ok && msg.contains("KIOCGADDR"), "{msg}");

    // The driver answers the same numbers.
    assert_eq!(ksyms::device::KIOCGSIZE, 0x4008_6c01);
    assert_eq!(ksyms::device::KIOCGADDR, 0x4008_6c02);
    assert_eq!(ksyms::device::KIOCGSIZE32, 0x4004_6c01);
    assert_eq!(ksyms::device::KIOCGADDR32, 0x4004_6c02);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn header_is_style_clean() {
    let h = std::fs::read_to_string(repo().join("include/sys/ksyms.h")).unwrap();
    assert!(h.starts_with("/*-\n * SPDX-License-Identifier: BSD-2-Clause\n"));
    assert!(h.contains("#ifndef _SYS_KSYMS_H_\n#define\t_SYS_KSYMS_H_\n"));
    assert!(h.contains("#include <sys/ioccom.h>\n"));
    assert!(h.trim_end().ends_with("#endif /* !_SYS_KSYMS_H_ */"));
}
