//! Every device rule of SPEC.md driven through the real `ksyms_rs_*` entry points on
//! the simulated kernel (tests/sim): exact errno values, exact bytes (the engine's
//! bytes for the same linker files, and an independent reading against the inputs),
//! and nothing leaked (every test ends with the simulator's accounting at zero).

#[path = "sim/mod.rs"]
mod sim;

use ksyms::kept::Contents;
use ksyms::values::ValueMemo;
use sim::files::{compiled, Lie, Rng, SimFile, Values, MODULES};
use sim::*;

/// What a build allocates for the next one, and keeps: the modules' values it
/// learns, the list of what its snapshot holds.
const MEMO_BYTES: usize = std::mem::size_of::<ValueMemo>();
const CONTENTS_BYTES: usize = std::mem::size_of::<Contents>();

/// The compiled module `n`.
fn module(n: usize) -> SimFile {
    compiled().modules[n].clone()
}

fn size(k: &Kernel, p: Pid, fd: Fd) -> u64 {
    k.ioctl_u64(p, fd, KIOCGSIZE).expect("KIOCGSIZE")
}

fn addr(k: &Kernel, p: Pid, fd: Fd) -> u64 {
    k.ioctl_u64(p, fd, KIOCGADDR).expect("KIOCGADDR")
}

// ---------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------

#[test]
fn snapshot_of_real_elf_files_is_the_engines_and_matches_the_inputs() {
    let c = compiled();
    let mut mods = c.modules.clone();
    mods.push(c.shared_module.clone());
    let k = Kernel::boot(c.kernel.clone(), mods);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let files = k.files();
    assert_eq!(files.len(), MODULES + 2);
    check::assert_snapshot(&files, &bytes);
    // The inputs are what the brief asks for: dozens of symbols per file, local and
    // global, some undefined in every module.
    let total: usize = files.iter().map(|f| f.file.syms.len()).sum();
    assert!(total > 600, "only {total} symbols");
    for f in &files[1..] {
        let undef = f
            .file
            .syms
            .iter()
            .skip(1)
            .filter(|s| s.st_shndx == 0)
            .count();
        assert!(undef >= 2, "{} has {undef} undefined symbols", f.file.name);
    }
    // Any read size gives the same bytes.
    for chunk in [1usize, 7, 24, 4096, 1 << 20] {
        assert_eq!(k.read_all(p, fd, chunk).unwrap(), bytes, "chunk {chunk}");
    }
    assert_eq!(size(&k, p, fd), bytes.len() as u64);
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn kernel_with_only_a_dynsym_table() {
    let c = compiled();
    assert!(c.kernel_dynsym.syms.len() > 40);
    let k = Kernel::boot(c.kernel_dynsym.clone(), vec![module(0)]);
    let p = k.spawn(false);
    let bytes = k.snapshot(p).unwrap();
    check::assert_snapshot(&k.files(), &bytes);
    k.shutdown();
}

/// A module as FreeBSD's link_elf reports its symbols: all at `base + st_value`.
fn linked_module(name: &str, symbols: usize, base: u64, seed: u64) -> SimFile {
    let mut f = SimFile::synthetic(name, false, symbols, 4, 24, &mut Rng::new(seed));
    f.values = Values::Linked(base);
    f
}

/// What a build learns of modules' values serves the next: after a kldload, the
/// first open asks the linker only of the new module's symbols, after a kldunload
/// of none, and a module loaded again (a new linker file) is asked again. The bytes
/// are the linker's every time.
#[test]
fn after_a_module_change_only_new_modules_are_asked_for_values() {
    let mods: Vec<SimFile> = (0..4)
        .map(|i| linked_module(&format!("m{i}"), 300, 0xffff_ffff_8300_0000 + (i << 24), i))
        .collect();
    let k = Kernel::boot(compiled().kernel.clone(), mods.clone());
    let p = k.spawn(false);
    let asked = |k: &Kernel, since: &mut u64| {
        let now = k.calls(Kind::SymbolValue);
        std::mem::replace(since, now).abs_diff(now)
    };
    let mut since = 0;
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());
    assert_eq!(
        asked(&k, &mut since),
        4 * 300,
        "the first build asks of all"
    );

    let new = linked_module("new", 200, 0xffff_ffff_8800_0000, 9);
    k.kld_load(new.clone());
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());
    assert_eq!(asked(&k, &mut since), 200, "only the new module");

    let m1 = k.files()[2].id;
    assert!(k.kld_unload(m1));
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());
    assert_eq!(asked(&k, &mut since), 0, "after an unload");

    k.kld_load(mods[1].clone());
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());
    assert_eq!(asked(&k, &mut since), 300, "the module loaded again");
    k.shutdown();
}

/// An open that fails (the modules change under all three attempts) leaves what
/// the last build learnt for the next: the modules still loaded are not asked
/// again, only those loaded meanwhile.
#[test]
fn a_failed_open_keeps_what_was_learnt() {
    let mods: Vec<SimFile> = (0..2)
        .map(|i| linked_module(&format!("m{i}"), 300, 0xffff_ffff_8300_0000 + (i << 24), i))
        .collect();
    let k = Kernel::boot(compiled().kernel.clone(), mods);
    let p = k.spawn(false);
    k.snapshot(p).unwrap();
    k.kld_load(linked_module("next", 50, 0xffff_ffff_8600_0000, 7));
    k.change_modules_during_three_attempts();
    assert_eq!(k.open(p, FREAD), Err(ENXIO));
    let since = k.calls(Kind::SymbolValue);
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());
    let loaded_meanwhile: usize = k.files()[3..].iter().map(|f| f.file.syms.len()).sum();
    assert!(loaded_meanwhile > 0);
    assert_eq!(
        (k.calls(Kind::SymbolValue) - since) as usize,
        loaded_meanwhile
    );
    k.shutdown();
}

/// A module unloaded and loaded again: the next open writes only the pages of
/// its share (and the header's), and keeps the others of the stale snapshot,
/// whose bytes are right. With the stale snapshot still mapped, nothing is kept
/// (its object is not recycled), and the bytes are right too.
#[test]
fn a_module_loaded_again_rewrites_only_its_pages() {
    let mods: Vec<SimFile> = (0..3)
        .map(|i| linked_module(&format!("m{i}"), 400, 0xffff_ffff_8300_0000 + (i << 24), i))
        .collect();
    let k = Kernel::boot(compiled().kernel.clone(), mods.clone());
    let p = k.spawn(false);
    let full = k.snapshot(p).unwrap();
    let all = k.pages_grabbed();
    assert_eq!(all, full.len().div_ceil(PAGE as usize) as u64);

    let last = k.files().last().unwrap().id;
    assert!(k.kld_unload(last));
    k.kld_load(mods[2].clone());
    k.take_probes();
    let bytes = k.snapshot(p).unwrap();
    check::assert_snapshot(&k.files(), &bytes);
    let written = k.pages_grabbed() - all;
    let share = (400 * 24 + mods[2].strs.len()).div_ceil(PAGE as usize) as u64;
    assert!(
        written <= share + 4,
        "{written} pages written for a share of {share}"
    );
    // The kernel, m0 and m1 are the same, and so are their values.
    let reuse: Vec<Probe> = k
        .take_probes()
        .into_iter()
        .filter(|p| matches!(p, Probe::Reuse { .. }))
        .collect();
    assert_eq!(
        reuse,
        [Probe::Reuse {
            files: 3,
            pages: all - written,
            modules: 2
        }]
    );

    // Held by a mapping: a new object, every page written.
    let fd = k.open(p, FREAD).unwrap();
    let a = k.mmap(p, fd, 0, bytes.len() as u64, PROT_READ).unwrap();
    k.close(p, fd).unwrap();
    let last = k.files().last().unwrap().id;
    assert!(k.kld_unload(last));
    k.kld_load(mods[2].clone());
    let before = k.pages_grabbed();
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());
    assert_eq!(k.pages_grabbed() - before, all);
    assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes);
    k.shutdown();
}

/// A module rebuilt and loaded again in place of the last one loaded: FreeBSD
/// gives it the same id, and malloc may well give it the same struct linker_file
/// and table addresses (the simulator does, for tables of the same sizes). Only
/// its load count tells it from the old one: nothing of the old one is kept, and
/// none of its values is reused.
#[test]
fn a_module_rebuilt_with_the_same_sizes_is_a_new_file() {
    let mods: Vec<SimFile> = (0..2)
        .map(|i| linked_module(&format!("m{i}"), 400, 0xffff_ffff_8300_0000 + (i << 24), i))
        .collect();
    let k = Kernel::boot(compiled().kernel.clone(), mods.clone());
    let p = k.spawn(false);
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());

    // The same tables' sizes, other values, sizes and names.
    let mut rebuilt = mods[1].clone();
    for s in rebuilt.syms.iter_mut().skip(1) {
        s.st_value += 0x40;
        s.st_size ^= 1;
    }
    for b in rebuilt.strs.iter_mut().filter(|b| b.is_ascii_lowercase()) {
        *b = b.to_ascii_uppercase();
    }
    rebuilt.values = Values::Linked(0xffff_ffff_8500_0000);
    let (old_id, old_syms) = {
        let files = k.files();
        let last = files.last().unwrap();
        (last.id, last.file.syms.as_ptr() as usize)
    };
    let id = k.kld_replace(old_id, rebuilt);
    {
        let files = k.files();
        let last = files.last().unwrap();
        assert_eq!(id, old_id, "FreeBSD gives the last file's id to the next");
        assert_eq!(last.file.syms.as_ptr() as usize, old_syms, "not in place");
    }
    check::assert_snapshot(&k.files(), &k.snapshot(p).unwrap());
    k.shutdown();
}

#[test]
fn module_values_are_the_linkers_and_names_are_the_inputs() {
    // A spot check by name, independent of the bulk comparison: a static function of
    // module 1 is at its section's load address plus its offset.
    let k = Kernel::boot_compiled(3);
    let p = k.spawn(false);
    let bytes = k.snapshot(p).unwrap();
    let (seen, _) = check::read_symbols(&bytes).unwrap();
    let m = module(1);
    let i = (0..m.syms.len())
        .find(|&i| m.name(i) == Some(b"simmod1_sfn_3".as_slice()))
        .expect("simmod1_sfn_3 in module 1");
    let want = m.resolve(i).expect("resolved");
    assert_ne!(want, m.syms[i].st_value, "a module value must be relocated");
    let hits: Vec<_> = seen.iter().filter(|s| s.name == b"simmod1_sfn_3").collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].value, want);
    assert_eq!(hits[0].shndx, 0xfff1, "SHN_ABS");
    k.shutdown();
}

// ---------------------------------------------------------------------------
// open(2)
// ---------------------------------------------------------------------------

#[test]
fn write_opens_are_refused_with_eperm() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    assert_eq!(k.open(p, FWRITE), Err(EPERM));
    assert_eq!(k.open(p, FREAD | FWRITE), Err(EPERM));
    assert_eq!(k.walks(), 0, "a refused open must not build a snapshot");
    assert_eq!(k.accounting(), Accounting::default());
    // And the process can still open for reading.
    let fd = k.open(p, FREAD).unwrap();
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn second_open_by_the_same_process_is_busy_until_close() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let before = k.accounting();
    assert_eq!(k.open(p, FREAD), Err(EBUSY));
    assert_eq!(k.accounting(), before, "a refused open left something");
    // Refused before any work: with the cache invalidated, no linker walk.
    let id = k.kld_load(module(3));
    let walks = k.walks();
    assert_eq!(k.open(p, FREAD), Err(EBUSY));
    assert_eq!(k.walks(), walks, "a refused open built a snapshot");
    assert!(k.kld_unload(id));
    // Another process is not limited by p's open.
    let fq = k.open(q, FREAD).unwrap();
    k.close(p, fd).unwrap();
    let fd2 = k.open(p, FREAD).unwrap();
    assert_eq!(k.open(p, FREAD), Err(EBUSY));
    k.close(p, fd2).unwrap();
    k.close(q, fq).unwrap();
    k.shutdown();
}

#[test]
fn a_child_may_open_its_own_while_holding_the_parents_descriptor() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let c = k.fork(p);
    let own = k.open(c, FREAD).expect("the child did not make p's open");
    assert_eq!(k.open(c, FREAD), Err(EBUSY));
    k.close(c, own).unwrap();
    k.close(c, fd).unwrap();
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn exit_releases_the_per_process_limit_and_exec_does_not() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    k.exec(p);
    // The descriptor survives exec: the new image still holds the device.
    assert_eq!(k.open(p, FREAD), Err(EBUSY), "exec released the hold");
    k.close(p, fd).unwrap();
    let _fd2 = k.open(p, FREAD).expect("open after the last close");
    assert_eq!(k.open(p, FREAD), Err(EBUSY));
    // Exit ends the hold, and the claim on the opener's address space, even while
    // a child keeps the open file alive: the kernel then reuses the struct proc.
    let c = k.fork(p);
    k.exit(p);
    let q = k.respawn(p);
    let qfd = k
        .open(q, FREAD)
        .expect("a stale hold refused the reused process");
    let a = addr(&k, q, qfd);
    k.exit(c);
    assert!(
        k.mapping_at(q, a).is_some(),
        "the child's last close unmapped from the reused process"
    );
    k.exit(q);
    assert_eq!(
        k.accounting(),
        Accounting {
            objects: 1,
            object_refs: 1,
            mallocs: 2,
            malloc_bytes: MEMO_BYTES + CONTENTS_BYTES,
            ..Default::default()
        },
        "only the cached snapshot, its list and the memo may remain"
    );
    k.shutdown();
}

#[test]
fn exit_and_exec_take_no_lock_while_nothing_is_open() {
    // The process_exit/process_exec events come for every process in the system.
    let k = Kernel::boot_compiled(1);
    let idle = k.spawn(false);
    let before = k.calls(Kind::Lock);
    k.exec(idle);
    k.exit(idle);
    assert_eq!(
        k.calls(Kind::Lock),
        before,
        "an idle device took ksyms_lock"
    );

    // With an open alive, the events are looked at (and still do their job).
    let p = k.spawn(false);
    let _held = k.open(p, FREAD).unwrap();
    let other = k.spawn(false);
    let before = k.calls(Kind::Lock);
    k.exit(other);
    assert!(
        k.calls(Kind::Lock) > before,
        "exit ignored while an open is alive"
    );
    k.exec(p);
    assert_eq!(k.open(p, FREAD), Err(EBUSY), "exec released the hold");
    k.exit(p);
    k.shutdown();
}

#[test]
fn open_after_unload_fails_with_enxio_until_the_next_load() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    assert_eq!(k.unload_device(), 0);
    assert_eq!(k.open(p, FREAD), Err(ENXIO));
    assert_eq!(k.walks(), 0);
    assert_eq!(k.load_device(), 0);
    let bytes = k.snapshot(p).unwrap();
    check::assert_snapshot(&k.files(), &bytes);
    k.shutdown();
}

// ---------------------------------------------------------------------------
// read(2)
// ---------------------------------------------------------------------------

#[test]
fn read_at_before_and_past_the_end() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let all = k.read_all(p, fd, 4096).unwrap();
    let n = all.len() as i64;
    assert_eq!(k.read(p, fd, n - 10, 100).unwrap(), all[all.len() - 10..]);
    assert_eq!(k.read(p, fd, 100, 50).unwrap(), all[100..150]);
    assert_eq!(k.read(p, fd, 0, 0).unwrap(), Vec::<u8>::new());
    assert_eq!(
        k.read(p, fd, n, 100).unwrap(),
        Vec::<u8>::new(),
        "at the end"
    );
    assert_eq!(k.read(p, fd, n + 1, 100).unwrap(), Vec::<u8>::new());
    assert_eq!(k.read(p, fd, i64::MAX, 100).unwrap(), Vec::<u8>::new());
    assert_eq!(k.read(p, fd, -1, 100), Err(EINVAL));
    assert_eq!(k.read(p, fd, i64::MIN, 100), Err(EINVAL));
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn read_from_a_forked_child_and_from_a_process_given_the_descriptor() {
    let k = Kernel::boot_compiled(3);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let want = k.read_all(p, fd, 8192).unwrap();
    let c = k.fork(p);
    let qfd = k.send_fd(p, fd, q);
    k.close(p, fd).unwrap();
    k.exit(p);
    assert_eq!(k.read_all(c, fd, 1000).unwrap(), want, "forked child");
    k.close(c, fd).unwrap();
    assert_eq!(k.read_all(q, qfd, 3000).unwrap(), want, "receiver");
    assert_eq!(k.ioctl_u64(q, qfd, KIOCGSIZE).unwrap(), want.len() as u64);
    k.close(q, qfd).unwrap();
    k.shutdown();
}

#[test]
fn a_failing_copy_out_is_efault_and_the_file_stays_usable() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    k.fail(Kind::ObjectRead, 1);
    assert_eq!(k.read(p, fd, 0, 100), Err(EFAULT));
    assert_eq!(k.fault_hits(Kind::ObjectRead), 1);
    let bytes = k.read_all(p, fd, 4096).unwrap();
    check::assert_snapshot(&k.files(), &bytes);
    k.close(p, fd).unwrap();
    k.shutdown();
}

// ---------------------------------------------------------------------------
// ioctl(2)
// ---------------------------------------------------------------------------

#[test]
fn kiocgsize_and_kiocgaddr_in_a_64_bit_process() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    assert_eq!(k.ioctl(p, fd, KIOCGSIZE).unwrap().len(), 8);
    assert_eq!(size(&k, p, fd), bytes.len() as u64);
    let a = addr(&k, p, fd);
    // The address is the opener's automatic mapping, and it holds the snapshot.
    let maps = k.auto_mappings(p);
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0].addr, a);
    assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes);
    assert!(
        a >= 1 << 32,
        "the simulator maps 64-bit processes above 4 GiB"
    );
    // A 64-bit address does not fit the 32-bit command.
    assert_eq!(k.ioctl(p, fd, KIOCGADDR32), Err(EOVERFLOW));
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn kiocgsize_and_kiocgaddr_in_a_32_bit_process() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(true);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let s = k.ioctl(p, fd, KIOCGSIZE32).unwrap();
    assert_eq!(s.len(), 4);
    assert_eq!(
        u32::from_le_bytes(s[..4].try_into().unwrap()) as usize,
        bytes.len()
    );
    let a = k.ioctl_u64(p, fd, KIOCGADDR32).unwrap();
    let m = k.auto_mappings(p);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].addr, a);
    assert!(
        a + m[0].len <= 1 << 32,
        "mapping of a 32-bit process above 4 GiB"
    );
    assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes);
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn unknown_ioctls_are_enotty() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    for cmd in [
        0u64,
        0x4008_6c03,   // _IOR('l', 3, 8)
        0x8008_6c01,   // _IOW('l', 1, 8)
        0xc008_6c01,   // _IOWR('l', 1, 8)
        0x2000_6c01,   // _IO('l', 1)
        0x4008_6b01,   // _IOR('k', 1, 8)
        0x4010_6c01,   // _IOR('l', 1, 16)
        0x1_4008_6c01, // upper bits set
        FIOSETOWN,     // fcntl(F_SETOWN): the device sends no signals
        FIOGETOWN,     // fcntl(F_GETOWN)
    ] {
        assert_eq!(k.ioctl(p, fd, cmd), Err(ENOTTY), "cmd {cmd:#x}");
    }
    k.close(p, fd).unwrap();
    k.shutdown();
}

/// fcntl(F_SETFL) sends FIONBIO and FIOASYNC at every call; both are accepted, the
/// flags stick, and the descriptor serves reads, ioctls and mmap as before, in 64-
/// and 32-bit processes. ioctl(2) FIONBIO/FIOASYNC work as well.
#[test]
fn fcntl_nonblock_and_async_are_accepted_and_the_file_keeps_serving() {
    for is32 in [false, true] {
        let k = Kernel::boot_compiled(2);
        let p = k.spawn(is32);
        let fd = k.open(p, FREAD).unwrap();
        let bytes = k.read_all(p, fd, 1 << 16).unwrap();
        let (gsize, gaddr) = if is32 {
            (KIOCGSIZE32, KIOCGADDR32)
        } else {
            (KIOCGSIZE, KIOCGADDR)
        };
        let a = k.ioctl_u64(p, fd, gaddr).unwrap();
        let both = O_NONBLOCK | O_ASYNC;
        let before = k.file_flags(p, fd).unwrap();
        assert_eq!(before & both, 0);

        for (set, want) in [(O_NONBLOCK, O_NONBLOCK), (O_ASYNC, O_ASYNC), (both, both)] {
            assert_eq!(k.fcntl_setfl(p, fd, set), Ok(()), "F_SETFL {set:#x}");
            assert_eq!(k.file_flags(p, fd).unwrap(), before | want);
            assert_eq!(k.read_all(p, fd, 4096).unwrap(), bytes);
        }
        // With both set: every service of the descriptor, as before.
        assert_eq!(k.ioctl_u64(p, fd, gsize).unwrap(), bytes.len() as u64);
        assert_eq!(k.ioctl_u64(p, fd, gaddr).unwrap(), a);
        assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes);
        let m = k.mmap(p, fd, 0, bytes.len() as u64, PROT_READ).unwrap();
        assert_eq!(k.read_mem(p, m, bytes.len()).unwrap(), bytes);
        assert!(k.munmap(p, m, bytes.len() as u64));
        assert_eq!(k.ioctl(p, fd, FIOSETOWN), Err(ENOTTY));
        assert_eq!(k.file_flags(p, fd).unwrap(), before | both);

        assert_eq!(k.fcntl_setfl(p, fd, 0), Ok(()));
        assert_eq!(k.file_flags(p, fd).unwrap(), before);
        // ioctl(2) itself: the kernel sets the flag, the device accepts the command.
        for (cmd, flag) in [(FIONBIO, O_NONBLOCK), (FIOASYNC, O_ASYNC)] {
            assert_eq!(
                k.ioctl_arg(p, fd, cmd, &1i32.to_ne_bytes())
                    .map(|b| b.len()),
                Ok(4)
            );
            assert_eq!(k.file_flags(p, fd).unwrap(), before | flag);
            assert!(k.ioctl_arg(p, fd, cmd, &0i32.to_ne_bytes()).is_ok());
            assert_eq!(k.file_flags(p, fd).unwrap(), before);
        }
        assert_eq!(k.read_all(p, fd, 4096).unwrap(), bytes);
        k.close(p, fd).unwrap();
        k.shutdown();
    }
}

#[test]
fn kiocgaddr_in_a_child_forked_after_open_names_its_copy() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let a = addr(&k, p, fd);
    let c = k.fork(p);
    assert_eq!(k.ioctl_u64(c, fd, KIOCGADDR).unwrap(), a);
    assert_eq!(k.read_mem(c, a, bytes.len()).unwrap(), bytes);
    k.close(p, fd).unwrap();
    k.close(c, fd).unwrap();
    k.shutdown();
}

// ---------------------------------------------------------------------------
// mmap(2)
// ---------------------------------------------------------------------------

#[test]
fn mmap_bounds() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let s = bytes.len() as u64;
    let r = s.div_ceil(PAGE) * PAGE;
    assert!(r > s, "pick inputs whose size is not a page multiple");
    assert!(r >= 2 * PAGE);

    // Whole file, exact and rounded.
    let a = k.mmap(p, fd, 0, s, PROT_READ).unwrap();
    assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes);
    let a2 = k.mmap(p, fd, 0, r, PROT_READ).unwrap();
    let whole = k.read_mem(p, a2, r as usize).unwrap();
    assert_eq!(&whole[..bytes.len()], &bytes[..]);
    assert!(whole[bytes.len()..].iter().all(|&b| b == 0));
    // The last page alone.
    let a3 = k.mmap(p, fd, r - PAGE, PAGE, PROT_READ).unwrap();
    let tail = (r - PAGE) as usize;
    assert_eq!(
        k.read_mem(p, a3, bytes.len() - tail).unwrap(),
        bytes[tail..]
    );
    // PROT_NONE is not a write or an execute.
    k.mmap(p, fd, 0, PAGE, 0).unwrap();

    // The device's own checks (d_mmap_single sees page-rounded requests).
    let refused = [
        (r, PAGE),                       // offset equal to the rounded size
        (r + PAGE, PAGE),                // past it
        (r - PAGE, 2 * PAGE),            // offset + size past it
        (0, r + PAGE),                   // size past it
        (0, 0),                          // nothing
        (u64::MAX - PAGE + 1, 2 * PAGE), // offset + size overflows
        (PAGE, u64::MAX - PAGE + 1),
    ];
    for (off, len) in refused {
        assert_eq!(
            k.mmap_single(p, fd, off, len, PROT_READ),
            Err(EINVAL),
            "offset {off:#x} size {len:#x}"
        );
    }
    // Through mmap(2): the same refusal.
    assert_eq!(k.mmap(p, fd, r, 1, PROT_READ), Err(EINVAL));
    assert_eq!(k.mmap(p, fd, r - PAGE, PAGE + 1, PROT_READ), Err(EINVAL));
    // The offset the device got back is the one asked for, and the object is the
    // snapshot's (the one behind the automatic mapping).
    let auto = k.mapping_at(p, addr(&k, p, fd)).unwrap().obj;
    let refs = k.object_refs(auto);
    let (off, obj) = k.mmap_single(p, fd, PAGE, PAGE, PROT_READ).unwrap();
    assert_eq!((off, obj), (PAGE, auto));
    assert_eq!(
        k.object_refs(auto),
        refs + 1,
        "no reference for the mapping"
    );
    k.object_release(obj);
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn mmap_refuses_write_and_exec() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    for prot in [
        PROT_WRITE,
        PROT_EXEC,
        PROT_READ | PROT_WRITE,
        PROT_READ | PROT_EXEC,
        PROT_READ | PROT_WRITE | PROT_EXEC,
    ] {
        assert_eq!(k.mmap(p, fd, 0, PAGE, prot), Err(EINVAL), "prot {prot}");
    }
    assert_eq!(
        k.auto_mappings(p).len(),
        k.mappings(p).len(),
        "no mmap made"
    );
    k.close(p, fd).unwrap();
    k.shutdown();
}

#[test]
fn mmap_from_a_child_and_from_a_process_given_the_descriptor() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let q = k.spawn(true);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let c = k.fork(p);
    let qfd = k.send_fd(p, fd, q);
    k.close(p, fd).unwrap();
    let ac = k.mmap(c, fd, 0, bytes.len() as u64, PROT_READ).unwrap();
    assert_eq!(k.read_mem(c, ac, bytes.len()).unwrap(), bytes);
    let aq = k.mmap(q, qfd, 0, bytes.len() as u64, PROT_READ).unwrap();
    assert!(aq < 1 << 32);
    assert_eq!(k.read_mem(q, aq, bytes.len()).unwrap(), bytes);
    k.shutdown();
}

#[test]
fn a_mapping_outlives_close_and_unload_until_munmap() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let bytes = k.read_all(p, fd, 1 << 16).unwrap();
    let len = bytes.len() as u64;
    let a = k.mmap(p, fd, 0, len, PROT_READ).unwrap();
    let obj = k.mapping_at(p, a).unwrap().obj;
    k.close(p, fd).unwrap();
    assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes, "after close");
    assert_eq!(k.unload_device(), 0, "a live mmap must not block unload");
    assert_eq!(
        k.read_mem(p, a, bytes.len()).unwrap(),
        bytes,
        "after unload"
    );
    assert_eq!(k.object_refs(obj), 1, "only the mapping holds the snapshot");
    assert!(k.munmap(p, a, len));
    assert_eq!(
        k.object_refs(obj),
        0,
        "snapshot freed with its last mapping"
    );
    assert_eq!(k.accounting(), Accounting::default());
    k.shutdown();
}

// ---------------------------------------------------------------------------
// close(2) and the automatic mapping
// ---------------------------------------------------------------------------

#[test]
fn the_automatic_mapping_goes_from_the_opener_at_the_last_close() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let a = addr(&k, p, fd);
    let c = k.fork(p);
    let qfd = k.send_fd(p, fd, q);
    k.close(p, fd).unwrap();
    assert!(
        k.mapping_at(p, a).is_some(),
        "removed before the last close"
    );
    k.close(c, fd).unwrap();
    assert!(
        k.mapping_at(p, a).is_some(),
        "removed before the last close"
    );
    // q's mappings before the last close: none of the device's.
    assert!(k.auto_mappings(q).is_empty());
    k.close(q, qfd).unwrap();
    assert!(k.mapping_at(p, a).is_none(), "not removed from the opener");
    assert!(
        k.mapping_at(c, a).is_some(),
        "the child's inherited copy is the child's"
    );
    assert!(k.auto_mappings(q).is_empty());
    k.shutdown();
}

#[test]
fn a_single_close_removes_the_mapping() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let a = addr(&k, p, fd);
    assert!(k.mapping_at(p, a).is_some());
    k.close(p, fd).unwrap();
    assert!(k.mappings(p).is_empty());
    k.shutdown();
}

#[test]
fn something_else_mapped_where_the_snapshot_was_is_left_alone() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let a = addr(&k, p, fd);
    let len = size(&k, p, fd);
    assert!(k.munmap(p, a, len));
    assert!(k.map_anon(p, a, len, 0x77));
    k.close(p, fd).unwrap();
    let m = k
        .mapping_at(p, a)
        .expect("the process's own mapping was removed");
    assert_eq!(m.origin, Origin::Anon);
    assert_eq!(k.read_mem(p, a, 16).unwrap(), vec![0x77; 16]);
    k.shutdown();
}

#[test]
fn the_last_close_after_the_opener_exited_unmaps_nothing() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    let qfd = k.send_fd(p, fd, q);
    k.exit(p);
    // The simulator records a violation if the device touches the dead opener.
    k.close(q, qfd).unwrap();
    k.assert_clean();
    k.shutdown();
}

#[test]
fn a_close_after_exec_spares_the_new_images_mapping() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let old = k.open(p, FREAD).unwrap();
    let a_old = addr(&k, p, old);
    let size = k.ioctl_u64(p, old, KIOCGSIZE).unwrap();
    k.exec(p);
    assert!(k.mappings(p).is_empty());
    // The new image maps the snapshot itself, through the inherited descriptor. The
    // simulator hands out the same address in the fresh address space, so the
    // mapping looks exactly like the automatic one did: a wrong unmap would hit it.
    let a_new = k.mmap(p, old, 0, size, PROT_READ).unwrap();
    assert_eq!(a_old, a_new);
    k.close(p, old).unwrap();
    assert!(
        k.mapping_at(p, a_new).is_some(),
        "closing the pre-exec open removed the new image's mapping"
    );
    k.assert_clean();
    assert!(k.munmap(p, a_new, size));
    assert!(k.mappings(p).is_empty());
    k.shutdown();
}

// ---------------------------------------------------------------------------
// Unload
// ---------------------------------------------------------------------------

#[test]
fn unload_is_refused_while_any_descriptor_is_open() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let fd = k.open(p, FREAD).unwrap();
    assert_eq!(k.unload_device(), EBUSY);
    let qfd = k.send_fd(p, fd, q);
    k.close(p, fd).unwrap();
    assert_eq!(k.unload_device(), EBUSY, "q still holds the open file");
    // The device still works after a refused unload.
    assert!(!k.read_all(q, qfd, 4096).unwrap().is_empty());
    k.close(q, qfd).unwrap();
    assert_eq!(k.unload_device(), 0);
    assert_eq!(k.cached_bytes(), 0);
    assert_eq!(
        k.accounting(),
        Accounting::default(),
        "unload left something"
    );
    assert_eq!(k.load_device(), 0);
    k.shutdown();
}

#[test]
fn unload_is_refused_while_an_open_is_under_way() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    // Between the census and the writing walk of p's open.
    k.hook(At::Call(Kind::ObjectAlloc, 1), move |sim| {
        *s.lock().unwrap() = Some(sim.unload_device());
    });
    let fd = k.open(p, FREAD).unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(EBUSY));
    k.close(p, fd).unwrap();
    k.shutdown();
}

// ---------------------------------------------------------------------------
// Linker files changing between the walks
// ---------------------------------------------------------------------------

#[test]
fn a_module_loaded_between_the_walks_is_retried_and_consistent() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    // Walk 1 is the census of attempt 1; before walk 2 a module arrives.
    k.hook(At::Call(Kind::LinkerForeach, 2), |sim| {
        sim.kld_load(module(4));
    });
    let bytes = k.snapshot(p).unwrap();
    assert_eq!(k.walks(), 4, "one retry");
    let files = k.files();
    assert_eq!(files.len(), 4);
    check::assert_snapshot(&files, &bytes);
    k.shutdown();
}

#[test]
fn a_module_unloaded_between_the_walks_is_retried_and_consistent() {
    let k = Kernel::boot_compiled(4);
    let p = k.spawn(false);
    k.hook(At::Call(Kind::LinkerForeach, 2), |sim| {
        let id = sim.module_ids()[1];
        assert!(sim.kld_unload(id));
    });
    let bytes = k.snapshot(p).unwrap();
    assert_eq!(k.walks(), 4);
    let files = k.files();
    assert_eq!(files.len(), 4);
    check::assert_snapshot(&files, &bytes);
    k.shutdown();
}

#[test]
fn a_module_vanishing_in_the_middle_of_a_walk_is_retried() {
    let k = Kernel::boot_compiled(4);
    let p = k.spawn(false);
    // After the second file of the writing walk: the last module goes.
    k.hook(At::WalkStep(2, 2), |sim| {
        let id = *sim.module_ids().last().unwrap();
        assert!(sim.kld_unload(id));
    });
    let bytes = k.snapshot(p).unwrap();
    assert_eq!(k.walks(), 4);
    check::assert_snapshot(&k.files(), &bytes);
    k.shutdown();
}

#[test]
fn enxio_after_three_changing_attempts_then_recovery() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    k.change_modules_during_three_attempts();
    assert_eq!(k.open(p, FREAD), Err(ENXIO));
    assert_eq!(k.walks(), 6, "exactly three attempts");
    assert_eq!(k.pending_hooks(), 0);
    assert_eq!(
        k.accounting(),
        Accounting::default(),
        "a failed open left something"
    );
    let bytes = k.snapshot(p).unwrap();
    let files = k.files();
    assert_eq!(files.len(), 5);
    check::assert_snapshot(&files, &bytes);
    k.shutdown();
}

#[test]
fn two_changing_attempts_then_a_consistent_third() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    for (i, walk) in [2u64, 4].into_iter().enumerate() {
        k.hook(At::Call(Kind::LinkerForeach, walk), move |sim| {
            sim.kld_load(SimFile::small_module(
                &format!("twice{i}"),
                20,
                3 + i as u64,
            ));
        });
    }
    let bytes = k.snapshot(p).unwrap();
    assert_eq!(k.walks(), 6);
    check::assert_snapshot(&k.files(), &bytes);
    k.shutdown();
}

/// A module whose symbol table breaks ELF's order (a local after a global): the
/// first attempt, which counts each file's locals by binary search, miscounts it;
/// the writer, placing symbols by their binding, finds the locals' part too short or
/// too long; the retry counts every symbol. One extra census and writing walk, and
/// the right bytes.
#[test]
fn a_table_with_a_local_after_a_global_costs_one_retry() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let mut m = SimFile::small_module("unordered", 60, 17);
    let g = m.syms.iter().position(|s| !s.is_local()).unwrap();
    assert!(g > 1, "no local to move after a global");
    m.syms.swap(g - 1, g);
    if let sim::files::Values::Table(t) = &mut m.values {
        t.swap(g - 1, g);
    }
    k.kld_load(m);
    let walks = k.walks();
    let b = k.snapshot(p).unwrap();
    check::assert_snapshot(&k.files(), &b);
    assert_eq!(k.walks() - walks, 4, "not one failed attempt and one retry");
    k.shutdown();
}

// ---------------------------------------------------------------------------
// The shared snapshot
// ---------------------------------------------------------------------------

#[test]
fn a_second_open_shares_the_snapshot_without_walking() {
    let k = Kernel::boot_compiled(3);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let fp = k.open(p, FREAD).unwrap();
    assert_eq!((k.walks(), k.calls(Kind::ObjectAlloc)), (2, 1));
    let fq = k.open(q, FREAD).unwrap();
    assert_eq!(
        (k.walks(), k.calls(Kind::ObjectAlloc)),
        (2, 1),
        "second open rebuilt"
    );
    let op = k.mapping_at(p, addr(&k, p, fp)).unwrap().obj;
    let oq = k.mapping_at(q, addr(&k, q, fq)).unwrap().obj;
    assert_eq!(op, oq, "not the same VM object");
    let bp = k.read_all(p, fp, 1 << 16).unwrap();
    assert_eq!(k.read_all(q, fq, 1 << 16).unwrap(), bp);
    assert_eq!(k.cached_bytes(), bp.len() as u64);
    k.close(p, fp).unwrap();
    k.close(q, fq).unwrap();
    // After every close the cache still serves.
    let r = k.spawn(false);
    assert_eq!(k.snapshot(r).unwrap(), bp);
    assert_eq!(k.walks(), 2);
    k.shutdown();
}

#[test]
fn a_load_or_unload_between_opens_forces_a_rebuild() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let r = k.spawn(false);
    let fp = k.open(p, FREAD).unwrap();
    let before = k.read_all(p, fp, 1 << 16).unwrap();
    let id = k.kld_load(module(3));
    assert_eq!(k.cached_bytes(), 0, "the stale snapshot is still cached");
    let fq = k.open(q, FREAD).unwrap();
    assert_eq!(k.walks(), 4);
    let after = k.read_all(q, fq, 1 << 16).unwrap();
    check::assert_snapshot(&k.files(), &after);
    // The earlier open keeps its own, older snapshot.
    assert_eq!(k.read_all(p, fp, 1 << 16).unwrap(), before);
    assert!(k.kld_unload(id));
    let fr = k.open(r, FREAD).unwrap();
    assert_eq!(k.walks(), 6);
    assert_eq!(k.read_all(r, fr, 1 << 16).unwrap(), before);
    for (pid, fd) in [(p, fp), (q, fq), (r, fr)] {
        k.close(pid, fd).unwrap();
    }
    k.shutdown();
}

/// The object of `p`'s open `fd` (its automatic mapping's).
fn object_of(k: &Kernel, p: Pid, fd: Fd) -> u64 {
    k.mapping_at(p, addr(k, p, fd)).unwrap().obj
}

#[test]
fn a_rebuild_recycles_the_stale_snapshot_that_nobody_holds() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let fp = k.open(p, FREAD).unwrap();
    let before = k.read_all(p, fp, 1 << 16).unwrap();
    let obj = object_of(&k, p, fp);
    k.close(p, fp).unwrap();
    assert_eq!(
        (k.cached_bytes(), k.spare_bytes()),
        (before.len() as u64, 0)
    );
    // A load: the snapshot grows, within the object's room.
    let id = k.kld_load(module(2));
    assert_eq!(
        (k.cached_bytes(), k.spare_bytes()),
        (0, before.len() as u64)
    );
    k.take_probes();
    let fp = k.open(p, FREAD).unwrap();
    assert_eq!(
        object_of(&k, p, fp),
        obj,
        "a new object for the grown snapshot"
    );
    assert_eq!((k.calls(Kind::ObjectAlloc), k.object_recycles(obj)), (1, 1));
    let grown = k.read_all(p, fp, 1 << 16).unwrap();
    assert!(grown.len() > before.len());
    assert_eq!((k.cached_bytes(), k.spare_bytes()), (grown.len() as u64, 0));
    let recycles: Vec<_> = k
        .take_probes()
        .into_iter()
        .filter(|p| matches!(p, Probe::Recycle { .. }))
        .collect();
    let size = grown.len() as u64;
    assert_eq!(recycles, [Probe::Recycle { size, error: 0 }]);
    check::assert_snapshot(&k.files(), &grown);
    k.close(p, fp).unwrap();
    // An unload: the snapshot shrinks; the pages past it go, and the rest of the
    // last page reads as zeros, not as the bigger snapshot's bytes.
    assert!(k.kld_unload(id));
    let fp = k.open(p, FREAD).unwrap();
    assert_eq!((object_of(&k, p, fp), k.object_recycles(obj)), (obj, 2));
    assert_eq!(k.read_all(p, fp, 1 << 16).unwrap(), before);
    let len = before.len().next_multiple_of(4096);
    let a = k.mmap(p, fp, 0, len as u64, PROT_READ).unwrap();
    let mem = k.read_mem(p, a, len).unwrap();
    assert_eq!(mem[..before.len()], before[..]);
    assert!(
        mem[before.len()..].iter().all(|&b| b == 0),
        "old bytes past the end"
    );
    assert!(k.munmap(p, a, len as u64));
    k.close(p, fp).unwrap();
    assert_eq!(k.calls(Kind::ObjectAlloc), 1);
    k.shutdown();
}

#[test]
fn a_snapshot_still_open_or_mapped_is_not_recycled() {
    let k = Kernel::boot_compiled(2);
    let (p, q, r) = (k.spawn(false), k.spawn(false), k.spawn(false));
    // An open holds the stale snapshot.
    let fp = k.open(p, FREAD).unwrap();
    let first = k.read_all(p, fp, 1 << 16).unwrap();
    let held = object_of(&k, p, fp);
    k.kld_load(SimFile::small_module("one", 300, 7));
    assert_eq!(k.spare_bytes(), first.len() as u64);
    k.take_probes();
    let fq = k.open(q, FREAD).unwrap();
    let second = k.read_all(q, fq, 1 << 16).unwrap();
    check::assert_snapshot(&k.files(), &second);
    let mapped = object_of(&k, q, fq);
    assert_ne!(mapped, held, "recycled while an open holds it");
    let size = second.len() as u64;
    assert!(k
        .take_probes()
        .contains(&Probe::Recycle { size, error: EBUSY }));
    assert_eq!(k.read_all(p, fp, 1 << 16).unwrap(), first);
    k.close(p, fp).unwrap();
    // An mmap of a closed open holds the stale snapshot.
    let len = second.len() as u64;
    let a = k.mmap(q, fq, 0, len, PROT_READ).unwrap();
    k.close(q, fq).unwrap();
    k.kld_load(SimFile::small_module("two", 300, 8));
    let fr = k.open(r, FREAD).unwrap();
    check::assert_snapshot(&k.files(), &k.read_all(r, fr, 1 << 16).unwrap());
    assert_ne!(
        object_of(&k, r, fr),
        mapped,
        "recycled while an mmap holds it"
    );
    assert_eq!(k.read_mem(q, a, second.len()).unwrap(), second);
    assert_eq!((k.object_recycles(held), k.object_recycles(mapped)), (0, 0));
    k.close(r, fr).unwrap();
    assert!(k.munmap(q, a, len));
    k.shutdown();
}

#[test]
fn a_snapshot_that_outgrew_its_object_or_a_refused_recycle_gets_a_new_object() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let small = k.snapshot(p).unwrap().len();
    // A module bigger than the object's room.
    k.kld_load(SimFile::small_module("big", 3000, 9));
    let fp = k.open(p, FREAD).unwrap();
    let big = k.read_all(p, fp, 1 << 16).unwrap();
    assert!(big.len() as u64 > ksyms::device::object_size(small as u64));
    check::assert_snapshot(&k.files(), &big);
    assert_eq!(k.calls(Kind::ObjectAlloc), 2);
    assert_eq!(k.device_objects().len(), 1, "the outgrown object was kept");
    k.close(p, fp).unwrap();
    // The recycle refused for no visible reason (the kernel's call): a new object.
    k.kld_load(SimFile::small_module("more", 10, 10));
    k.fail(Kind::ObjectRecycle, 1);
    k.take_probes();
    let b = k.snapshot(p).unwrap();
    assert_eq!(k.fault_hits(Kind::ObjectRecycle), 1);
    let size = b.len() as u64;
    assert!(k
        .take_probes()
        .contains(&Probe::Recycle { size, error: EBUSY }));
    check::assert_snapshot(&k.files(), &b);
    assert_eq!(k.calls(Kind::ObjectAlloc), 3);
    assert_eq!(k.device_objects().len(), 1);
    k.shutdown();
}

#[test]
fn with_the_cache_off_every_open_builds() {
    let k = Kernel::boot_compiled(1);
    k.set_cache_enabled(false);
    let p = k.spawn(false);
    let a = k.snapshot(p).unwrap();
    let b = k.snapshot(p).unwrap();
    assert_eq!(a, b);
    assert_eq!(k.walks(), 4);
    assert_eq!(k.cached_bytes(), 0);
    k.shutdown();
}

/// A module load racing a build, at every kpi call of an open: the open returns the
/// snapshot of the set before or after the load, and the next open that of the set
/// after (never a stale cached one).
#[test]
fn a_load_racing_a_build_never_leaves_a_stale_snapshot_cached() {
    let kinds = [
        Kind::LinkerForeach,
        Kind::Malloc,
        Kind::ObjectAlloc,
        Kind::PageGrab,
        Kind::MapObject,
        Kind::SetCdevpriv,
        Kind::Lock,
        Kind::SymbolValue,
    ];
    let mut raced = 0;
    for kind in kinds {
        for n in 1u64.. {
            let k = Kernel::boot_compiled(2);
            let p = k.spawn(false);
            let q = k.spawn(false);
            let before = k.files();
            let added = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = added.clone();
            k.hook(At::Call(kind, n), move |sim| {
                sim.kld_load(SimFile::small_module("racer", 40, 99));
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let fd = k.open(p, FREAD).unwrap();
            let got = k.read_all(p, fd, 1 << 16).unwrap();
            if !added.load(std::sync::atomic::Ordering::SeqCst) {
                // The hook was not reached by this open: every point is covered.
                k.close(p, fd).unwrap();
                k.shutdown();
                assert!(n > 1, "{kind:?} never called");
                break;
            }
            raced += 1;
            let after = k.files();
            assert!(
                check::which_set(&[before, after.clone()], &got).is_some(),
                "{kind:?} #{n}: the snapshot is neither the set before nor after"
            );
            let next = k.snapshot(q).unwrap();
            check::assert_snapshot(&after, &next);
            k.close(p, fd).unwrap();
            k.shutdown();
        }
    }
    eprintln!("load raced a build at {raced} points");
    assert!(raced > 20, "only {raced} races");
}

#[test]
fn a_load_after_the_writing_walk_is_not_cached() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let before = k.files();
    k.hook(At::WalkEnd(2), |sim| {
        sim.kld_load(module(5));
    });
    let bytes = k.snapshot(p).unwrap();
    // The two walks agreed: the snapshot is the set they saw.
    assert_eq!(k.walks(), 2);
    check::assert_snapshot(&before, &bytes);
    assert_eq!(k.cached_bytes(), 0);
    let again = k.snapshot(p).unwrap();
    assert_eq!(k.walks(), 4);
    check::assert_snapshot(&k.files(), &again);
    k.shutdown();
}

// ---------------------------------------------------------------------------
// Opens racing each other (deterministic, through hooks)
// ---------------------------------------------------------------------------

#[test]
fn another_process_opening_during_a_build() {
    let k = Kernel::boot_compiled(2);
    let p = k.spawn(false);
    let q = k.spawn(false);
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    k.hook(At::Call(Kind::ObjectAlloc, 1), move |sim| {
        let r = sim.snapshot(q);
        *g.lock().unwrap() = Some(r);
    });
    let mine = k.snapshot(p).unwrap();
    let theirs = got.lock().unwrap().take().unwrap().unwrap();
    assert_eq!(mine, theirs);
    check::assert_snapshot(&k.files(), &mine);
    k.shutdown();
}

#[test]
fn two_threads_of_one_process_opening_at_once_get_one_open() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    // While p's open builds, another thread of p opens (and wins).
    k.hook(At::Call(Kind::ObjectAlloc, 1), move |sim| {
        *g.lock().unwrap() = Some(sim.open(p, FREAD));
    });
    assert_eq!(k.open(p, FREAD), Err(EBUSY));
    let inner = got.lock().unwrap().take().unwrap().expect("the inner open");
    assert_eq!(
        k.auto_mappings(p).len(),
        1,
        "the loser's mapping was left behind"
    );
    let bytes = k.read_all(p, inner, 4096).unwrap();
    assert_eq!(
        k.read_mem(p, addr(&k, p, inner), bytes.len()).unwrap(),
        bytes
    );
    k.close(p, inner).unwrap();
    k.shutdown();
}

// ---------------------------------------------------------------------------
// What runs under ksyms_lock
// ---------------------------------------------------------------------------

/// The kernel services each path calls with ksyms_lock held (device.rs's lock
/// section says why each must be there): no allocation, free, linker walk, object
/// write or release, and no VM object torn down.
#[test]
fn only_what_must_runs_under_ksyms_lock() {
    const NONE: [&str; 0] = [];
    let k = Kernel::boot_compiled(2);
    assert_eq!(k.take_locked_calls(), NONE, "load");
    let p = k.spawn(false);
    let q = k.spawn(false);

    // An open that builds: allocation, walks, writes and the mapping, all outside.
    let fd = k.open(p, FREAD).unwrap();
    assert_eq!(k.take_locked_calls(), NONE, "open that builds");
    // An open from the cache: the new reference, while the cache's keeps the object.
    let fq = k.open(q, FREAD).unwrap();
    assert_eq!(
        k.take_locked_calls(),
        ["kpi_object_ref"],
        "open from the cache"
    );
    assert_eq!(k.open(q, FREAD), Err(EBUSY));
    assert_eq!(k.take_locked_calls(), NONE, "refused open");

    // The calls on an open file take no lock.
    let bytes = k.read_all(q, fq, 4096).unwrap();
    let a = addr(&k, q, fq);
    let m = k.mmap(q, fq, 0, bytes.len() as u64, PROT_READ).unwrap();
    assert!(k.munmap(q, m, bytes.len() as u64));
    assert_eq!(k.fcntl_setfl(q, fq, O_NONBLOCK), Ok(()));
    assert_eq!(k.take_locked_calls(), NONE, "read, ioctl, mmap");

    // The last close: the unmap from the opener; the open's reference and memory
    // go after the lock.
    k.close(q, fq).unwrap();
    assert_eq!(k.take_locked_calls(), ["kpi_unmap_object"], "last close");
    assert!(k.read_mem(q, a, 1).is_none(), "the mapping stayed");

    // A module change drops the cache (its object is still used by p's open).
    let id = k.kld_load(SimFile::small_module("lock_a", 20, 1));
    assert_eq!(k.take_locked_calls(), NONE, "kld_load");
    // A rebuild with a stale cache, then the cache replaced: releases outside.
    k.set_cache_enabled(false);
    let fq = k.open(q, FREAD).unwrap();
    k.close(q, fq).unwrap();
    k.set_cache_enabled(true);
    assert_eq!(
        k.take_locked_calls(),
        ["kpi_unmap_object"],
        "uncached open and close"
    );
    let _closed_by_exit = k.open(q, FREAD).unwrap();
    assert!(k.kld_unload(id));
    let s = k.spawn(false);
    let fs = k.open(s, FREAD).unwrap();
    assert_eq!(k.take_locked_calls(), NONE, "opens replacing the cache");

    // The events: exit and exec of a process with an open.
    k.exec(q);
    k.exit(q);
    assert_eq!(k.take_locked_calls(), NONE, "exec, exit");
    assert!(k.cached_bytes() > 0);
    assert_eq!(k.take_locked_calls(), NONE, "cached_bytes");

    // The last close of a snapshot no one else holds: its teardown comes after the
    // lock (the cache is off, so the open's reference is the last).
    k.close(s, fs).unwrap();
    assert_eq!(k.take_locked_calls(), ["kpi_unmap_object"], "close");
    k.set_cache_enabled(false);
    k.kld_load(SimFile::small_module("lock_b", 20, 2));
    let r = k.spawn(false);
    let fd_r = k.open(r, FREAD).unwrap();
    let obj = k.mapping_at(r, addr(&k, r, fd_r)).unwrap().obj;
    k.close(r, fd_r).unwrap();
    assert_eq!(
        k.object_refs(obj),
        0,
        "the snapshot outlived its last close"
    );
    assert_eq!(
        k.take_locked_calls(),
        ["kpi_unmap_object"],
        "last reference"
    );

    k.close(p, fd).unwrap();
    assert_eq!(k.take_locked_calls(), ["kpi_unmap_object"], "p's close");
    assert_eq!(k.unload_device(), 0);
    assert_eq!(k.take_locked_calls(), NONE, "unload");
    assert_eq!(k.load_device(), 0);
    k.shutdown();
}

/// Two threads of one process open at once; the loser's mapping is removed under
/// the lock, its snapshot reference and memory released after.
#[test]
fn a_lost_open_race_unmaps_under_the_lock_and_releases_after() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    k.hook(At::Call(Kind::MapObject, 1), move |sim| {
        *g.lock().unwrap() = Some(sim.open(p, FREAD));
    });
    assert_eq!(k.open(p, FREAD), Err(EBUSY));
    let inner = got.lock().unwrap().take().unwrap().unwrap();
    // The inner open shared the outer one's snapshot; the outer one lost.
    assert_eq!(
        k.take_locked_calls(),
        ["kpi_object_ref", "kpi_unmap_object"]
    );
    k.close(p, inner).unwrap();
    k.shutdown();
}

// ---------------------------------------------------------------------------
// Injected failures
// ---------------------------------------------------------------------------

/// The life of one open and the open that shares its snapshot: every kpi call of it
/// can fail. Returns the errno of the first failure, checking the device's state is
/// clean at that point.
fn lifecycle(k: &Kernel, p: Pid, q: Pid) -> Result<(), i32> {
    let fd = k.open(p, FREAD)?;
    let bytes = match k.read_all(p, fd, 1 << 12) {
        Ok(b) => b,
        Err(e) => {
            k.close(p, fd).unwrap();
            return Err(e);
        }
    };
    check::assert_snapshot(&k.files(), &bytes);
    assert_eq!(size(k, p, fd), bytes.len() as u64);
    let a = k.mmap(p, fd, 0, bytes.len() as u64, PROT_READ).unwrap();
    assert_eq!(k.read_mem(p, a, bytes.len()).unwrap(), bytes);
    let fq = match k.open(q, FREAD) {
        Ok(f) => f,
        Err(e) => {
            k.close(p, fd).unwrap();
            return Err(e);
        }
    };
    k.close(p, fd).unwrap();
    k.close(q, fq).unwrap();
    Ok(())
}

#[test]
fn every_injected_failure_is_a_clean_errno_and_leaks_nothing() {
    let mut hits = 0;
    for kind in Kind::FAULTABLE {
        for n in 1u64.. {
            let k = Kernel::boot_compiled(3);
            let p = k.spawn(false);
            let q = k.spawn(false);
            k.fail(kind, n);
            let r = lifecycle(&k, p, q);
            let hit = k.fault_hits(kind) > 0;
            k.clear_faults();
            if !hit {
                assert_eq!(r, Ok(()));
                assert!(n > 1, "{kind:?} is never called");
                k.shutdown();
                break;
            }
            hits += 1;
            let failed = k.failed_mallocs();
            if kind == Kind::Malloc && (failed == [MEMO_BYTES] || failed == [CONTENTS_BYTES]) {
                // Without memory for what it learns or lists for the next build,
                // a build goes on, and so does the open.
                assert_eq!(r, Ok(()), "{kind:?} #{n}");
            } else {
                assert_eq!(r, Err(kind.injected_errno()), "{kind:?} #{n}");
            }
            // Nothing of a failed open is left: no cdevpriv, no mapping of the
            // device in p or q except p's own mmap (closed files unmap theirs).
            let a = k.accounting();
            assert_eq!(a.cdevprivs, 0, "{kind:?} #{n}: {a:?}");
            assert_eq!(a.open_files, 0, "{kind:?} #{n}: {a:?}");
            assert!(k.auto_mappings(p).is_empty() && k.auto_mappings(q).is_empty());
            k.assert_clean();
            // And both can open again, with the right bytes.
            let b = k.snapshot(p).unwrap();
            check::assert_snapshot(&k.files(), &b);
            assert_eq!(k.snapshot(q).unwrap(), b);
            k.shutdown();
        }
    }
    eprintln!("{hits} failures injected");
    assert!(hits >= 10, "only {hits} failures injected");
}

#[test]
fn a_failing_map_leaves_no_open_and_no_reference() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    k.fail(Kind::MapObject, 1);
    assert_eq!(k.open(p, FREAD), Err(ENOMEM));
    // The snapshot built for the failed open is cached (one reference) and nothing
    // else holds it.
    let objs = k.device_objects();
    assert_eq!(objs.len(), 1);
    assert_eq!(k.object_refs(objs[0]), 1);
    // Besides it, only what the build learnt of modules' values and the list of
    // what the snapshot holds are kept.
    assert_eq!(k.accounting().mallocs, 2);
    let mut sizes = k.malloc_sizes();
    sizes.sort();
    assert_eq!(sizes, [CONTENTS_BYTES, MEMO_BYTES]);
    let fd = k.open(p, FREAD).unwrap();
    assert_eq!(k.walks(), 2, "the cached snapshot was not reused");
    k.close(p, fd).unwrap();
    k.shutdown();
}

// ---------------------------------------------------------------------------
// Bad linker files
// ---------------------------------------------------------------------------

fn bad_module(lie: Lie, syms_fix: impl FnOnce(&mut SimFile)) -> SimFile {
    let mut m = SimFile::small_module("bad", 12, 5);
    m.lie = lie;
    syms_fix(&mut m);
    m
}

#[test]
fn malformed_linker_files_are_eftype_and_leak_nothing() {
    let cases: Vec<(&str, SimFile, i32)> = vec![
        (
            "name past the string table",
            bad_module(Lie::default(), |m| {
                m.syms[3].st_name = m.strs.len() as u32;
            }),
            EFTYPE,
        ),
        (
            "name far past the string table",
            bad_module(Lie::default(), |m| {
                m.syms[5].st_name = u32::MAX;
            }),
            EFTYPE,
        ),
        (
            "unterminated string table",
            bad_module(Lie::default(), |m| {
                m.strs.push(b'x');
            }),
            EFTYPE,
        ),
        (
            "null symbol table",
            bad_module(
                Lie {
                    symtab_null: true,
                    ..Lie::default()
                },
                |_| {},
            ),
            EFTYPE,
        ),
        (
            "null string table",
            bad_module(
                Lie {
                    strtab_null: true,
                    ..Lie::default()
                },
                |_| {},
            ),
            EFTYPE,
        ),
        (
            "misaligned symbol table",
            bad_module(
                Lie {
                    symtab_misaligned: true,
                    symtab_count: Some(11),
                    ..Lie::default()
                },
                |_| {},
            ),
            EFTYPE,
        ),
        (
            "negative symbol count",
            bad_module(
                Lie {
                    symtab_count: Some(-1),
                    ..Lie::default()
                },
                |_| {},
            ),
            EFTYPE,
        ),
        (
            "symbol count overflowing the address space",
            bad_module(
                Lie {
                    symtab_count: Some(i64::MAX / 16),
                    ..Lie::default()
                },
                |_| {},
            ),
            EFTYPE,
        ),
        (
            "negative string table size",
            bad_module(
                Lie {
                    strtab_len: Some(i64::MIN),
                    ..Lie::default()
                },
                |_| {},
            ),
            EFTYPE,
        ),
        (
            "string table cut before the names",
            bad_module(
                Lie {
                    strtab_len: Some(1),
                    ..Lie::default()
                },
                |_| {},
            ),
            EFTYPE,
        ),
    ];
    for (what, file, errno) in cases {
        let k = Kernel::boot(compiled().kernel.clone(), vec![module(0)]);
        let p = k.spawn(false);
        let id = k.kld_load(file);
        assert_eq!(k.open(p, FREAD), Err(errno), "{what}");
        assert_eq!(k.accounting(), Accounting::default(), "{what}");
        k.assert_clean();
        // Without the bad module the device works again.
        assert!(k.kld_unload(id));
        let b = k.snapshot(p).unwrap();
        check::assert_snapshot(&k.files(), &b);
        k.shutdown();
    }
}

#[test]
fn a_truncated_but_consistent_count_is_honoured() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let mut m = SimFile::small_module("short", 30, 11);
    m.lie.symtab_count = Some(17);
    k.kld_load(m);
    let bytes = k.snapshot(p).unwrap();
    let files: Vec<SimFile> = k
        .files()
        .iter()
        .map(|f| f.file.effective().unwrap())
        .collect();
    assert_eq!(files[2].syms.len(), 17);
    check::assert_snapshot(&files, &bytes);
    k.shutdown();
}

#[test]
fn empty_modules_are_fine() {
    let k = Kernel::boot_compiled(1);
    let p = k.spawn(false);
    let mut empty = SimFile::small_module("empty", 0, 1);
    empty.strs.clear();
    k.kld_load(empty);
    let mut nulls_only = SimFile::small_module("nullsym", 1, 1);
    nulls_only.strs = vec![0];
    k.kld_load(nulls_only);
    let bytes = k.snapshot(p).unwrap();
    check::assert_snapshot(&k.files(), &bytes);
    k.shutdown();
}
