/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * ksyms_kpi.h: the one boundary between the C shim and the Rust crate.
 *
 * The shim (ksyms_shim.c) is the only code that includes kernel headers. It
 * implements the kpi_* services below as one-line wrappers over kernel
 * functions, macros and kobj methods, and forwards every cdevsw call to the
 * ksyms_rs_* entry points that the Rust crate exports. The host tests implement
 * the same kpi_* services in a simulated kernel. bindings/kpi.rs is generated
 * from this file by bindgen ("make bindings"); never edit it by hand.
 *
 * Kernel objects cross the boundary as pointers to incomplete types and are
 * never dereferenced by Rust.
 *
 * Lock order: the kernel linker's kld_sx, then ksyms_lock (kpi_lock), then VM
 * map and object locks. kpi_linker_foreach takes kld_sx, so it is never called
 * with ksyms_lock held; the kld_load/kld_unload handlers run with kld_sx held
 * and may take ksyms_lock. MOD_UNLOAD runs with kld_sx (and Giant) held,
 * MOD_LOAD with Giant held and kld_sx released (linker_file_sysinit):
 * ksyms_rs_load and ksyms_rs_unload never walk the linker files (sx locks do
 * not recurse).
 */

#ifndef _KSYMS_KPI_H_
#define _KSYMS_KPI_H_

#ifdef _KERNEL
#include <sys/types.h>
#else
#include <stddef.h>
#include <stdint.h>
#endif

struct linker_file;
struct proc;
struct uio;
struct vm_object;
struct vm_page;

/* Open flags (sys/fcntl.h) and protections (sys/mman.h), the kernel's. */
#define	KPI_FREAD	0x0001
#define	KPI_FWRITE	0x0002
#define	KPI_PROT_READ	0x01
#define	KPI_PROT_WRITE	0x02
#define	KPI_PROT_EXEC	0x04

/* ---- Services the shim provides to Rust ---- */

/* malloc(9), M_WAITOK | M_ZERO, M_KSYMS; NULL on failure (simulator only). */
void	*kpi_malloc(size_t size);
/* free(9) of a kpi_malloc'ed block; NULL is ignored. */
void	 kpi_free(void *p);

/*
 * ksyms_lock, an sx(9) lock owned by the shim; sleeping under it is allowed.
 * Rust hands out one exclusive reference to its state per hold, so taking it
 * recursively panics.
 */
void	 kpi_lock(void);
void	 kpi_unlock(void);

/*
 * linker_file_foreach(9): calls cb(lf, ctx) for each linker file in the
 * kernel's order, the kernel (id 1) first, with kld_sx held; stops at the
 * first non-zero return and returns it. Never called with ksyms_lock held
 * (asserted under INVARIANTS).
 */
typedef int kpi_linker_cb(struct linker_file *lf, void *ctx);
int	 kpi_linker_foreach(kpi_linker_cb *cb, void *ctx);
/*
 * What the snapshot reads of a linker file: its id (the kernel is 1), its
 * load count (lf->loadcnt: the linker's count of files made when this one
 * was, never reused, while the id of the file loaded last goes to the next
 * one), its symbol table (LINKER_SYMTAB_GET: nsyms Elf_Sym entries at
 * symtab) and its string table (LINKER_STRTAB_GET: strsz bytes at strtab),
 * as the linker reports them; the tables stay put while kld_sx is held.
 */
struct kpi_linker_file {
	const void	*symtab;
	const char	*strtab;
	long		 nsyms;
	long		 strsz;
	int		 id;
	int		 loadcnt;
};
void	 kpi_linker_file(struct linker_file *lf, struct kpi_linker_file *f);
/*
 * LINKER_DEBUG_SYMBOL_VALUES for the Elf_Sym at sym (inside lf's symbol
 * table): 0 and *value set to the symbol's absolute address, or an errno when
 * the linker reports none. Unlike LINKER_SYMBOL_VALUES, which hides a
 * module's local symbols while debug.link_elf_obj_leak_locals (or, for
 * link_elf modules, debug.link_elf_leak_locals) is 0, the debug method
 * reports them whatever those sysctls say; linker_if.m has it in every
 * supported release (13.x, 14.x, 15.x).
 */
int	 kpi_symbol_value(struct linker_file *lf, const void *sym,
	    uint64_t *value);

/*
 * A pageable anonymous VM object (OBJT_SWAP) of size bytes, rounded up to
 * pages, with one reference; NULL on failure. size is at most
 * KPI_OBJECT_MAX (OFF_MAX less a page, so that it rounds up to an off_t).
 * Charged to no one's credentials: the snapshot may be shared by every
 * opener and outlive the first in the cache, and a charge would pin that
 * opener's ucred (and jail) until the next module change.
 */
#define	KPI_OBJECT_MAX	0x7ffffffffffff000ULL
struct vm_object *kpi_object_alloc(uint64_t size);
/*
 * Takes obj, a snapshot object the caller kept after its module set changed,
 * for a new snapshot of size bytes (at most KPI_OBJECT_MAX): only when the
 * caller's is its one reference (no open, mapping or reader left to see its
 * pages change) and it has room for size. Then frees its pages past size and
 * their swap space; its pages below size keep their old bytes, resident or
 * paged out: the caller keeps some as they are, and has kpi_object_pages_grab
 * hand out the others to be written whole. 0, or EBUSY (obj untouched).
 */
int	 kpi_object_recycle(struct vm_object *obj, uint64_t size);
/* vm_object_reference(9) / vm_object_deallocate(9). */
void	 kpi_object_ref(struct vm_object *obj);
void	 kpi_object_release(struct vm_object *obj);
/*
 * uiomove_object(obj, obj_size, uio) without requeueing the pages it reads
 * (it marks them referenced): copies from obj at uio's offset (not negative)
 * to the caller's buffers, stopping at obj_size (at most KPI_OBJECT_MAX).
 * errno.
 */
int	 kpi_object_read(struct vm_object *obj, uint64_t obj_size,
	    struct uio *uio);
/*
 * Writing a new object, or a recycled one, in place (one copy, no uio): pages
 * pindex.. of obj, up to count (> 0) of them, stopping at the object's end;
 * each found or allocated now (not zeroed: old bytes or garbage),
 * exclusive-busied and wired, with m[i] and va[i], its direct-map address
 * (KPI_PAGE_SIZE writable bytes). Returns how many (0: pindex is past the
 * object). Called only while the caller holds the object's one reference,
 * never for a page it holds or has written since the object was allocated or
 * recycled.
 */
int	 kpi_object_pages_grab(struct vm_object *obj, uint64_t pindex,
	    int count, struct vm_page **m, void **va);
/*
 * Gives back count (> 0) pages of kpi_object_pages_grab: valid and dirty when
 * written is non-zero (every byte of each was written), else left as they
 * were (a failed attempt: its object is recycled and rewritten, or freed,
 * never read); unbusied and unwired into the active queue, pageable like any
 * anonymous page.
 */
void	 kpi_object_pages_release(struct vm_page *const *m, int count,
	    int written);

/* curthread->td_proc. */
struct proc *kpi_curproc(void);

/*
 * PAGE_SIZE: mapping lengths and hints are multiples of it, and it is the size
 * of a page kpi_object_pages_grab gives.
 */
#define	KPI_PAGE_SIZE	4096

/*
 * What the placement of a mapping in the current process depends on, read
 * with the kernel's accessors: the bounds of its map (vm_map_min, vm_map_max),
 * the start of its data segment (vm_daddr) and the hard limit of its data size
 * (lim_max(td, RLIMIT_DATA)). vm_mmap_object's default address is
 * round_page(data_start + data_limit), which may lie past map_max.
 */
struct kpi_vm_layout {
	uint64_t	map_min;
	uint64_t	map_max;
	uint64_t	data_start;
	uint64_t	data_limit;
};
void	 kpi_vm_layout(struct kpi_vm_layout *layout);
/*
 * Maps the first len bytes of obj into the current process, read-only (max
 * protection read) and shared (inherited by children forked later), at the
 * first free range vm_map_find_min finds from hint; the mapping holds its own
 * object reference. vm_mmap_object(9)'s steps for MAP_SHARED less its
 * MAP_PREFAULT_PARTIAL (no page is entered into the pmap), or vm_mmap_object
 * itself when the process wants future mappings wired (mlockall(2)
 * MCL_FUTURE). len is a non-zero multiple of KPI_PAGE_SIZE; hint is a non-zero
 * multiple of it (a hint of 0 means "from the bottom" on 13.x but "the
 * default mmap address" from 14.0). 0 and the address in *uaddr, or an errno
 * (ENOMEM: no room, or RLIMIT_VMEM).
 */
int	 kpi_map_object(struct vm_object *obj, uint64_t len, uint64_t hint,
	    uint64_t *uaddr);
/*
 * Removes the mapping [uaddr, uaddr + len) from p's address space, but only
 * if that range is still exactly one mapping of obj from its start (the
 * process may have unmapped it and mapped something else there, or split it
 * with mprotect(2); the range then goes with the process). The lookup
 * and the removal need one hold of the map lock: vm_map_remove(9), the public
 * function, takes the lock itself, and between a check and its call another
 * thread of p could replace the mapping with one of its own, which would then
 * be removed. So this uses vm_map_delete(9), documented as VM-internal but
 * exported in every supported release and used the same way outside the VM
 * proper (kern/uipc_shm.c, shm_mmap_large), under vm_map_lock. len is a
 * non-zero multiple of KPI_PAGE_SIZE and uaddr + len does not wrap. p must be
 * alive: the caller holds ksyms_lock, and p's process_exit/process_exec
 * events take it first.
 */
void	 kpi_unmap_object(struct proc *p, uint64_t uaddr, uint64_t len,
	    struct vm_object *obj);

/*
 * devfs_set_cdevpriv(priv, ksyms_rs_cdevpriv_dtor) / devfs_get_cdevpriv:
 * errno.
 */
int	 kpi_set_cdevpriv(void *priv);
int	 kpi_get_cdevpriv(void **priv);

/*
 * Fires SDT probe probe (a KPI_PROBE_*) of provider ksyms (sdt(9); ksyms(4)
 * lists them) with arguments a0..a3, 0 past the probe's own; does nothing in
 * a kernel without KDTRACE_HOOKS. The probes and their arguments:
 * snapshot:build-start	attempt (1, 2, ...) of a snapshot build;
 * snapshot:build-done	the attempt, 0 or its errno, the snapshot's size in
 *			bytes and number of symbols (0 and 0 on error);
 * snapshot:cache-hit	the size of the cached snapshot an open got;
 * snapshot:recycle	a build's try to recycle the stale snapshot's object:
 *			the new snapshot's size, 0 or the errno (EBUSY: still
 *			used or too small, a new object is made);
 * snapshot:reuse	what a successful build took from the last one: its
 *			leading files that were the same, the pages kept as
 *			they were, the modules whose values were known;
 * open:map		one try at placing the opener's mapping: the hint, the
 *			length, 0 or the errno, the address (0 on error);
 * open:refused		the errno an open failed with.
 */
#define	KPI_PROBE_BUILD_START	0
#define	KPI_PROBE_BUILD_DONE	1
#define	KPI_PROBE_CACHE_HIT	2
#define	KPI_PROBE_MAP		3
#define	KPI_PROBE_OPEN_REFUSED	4
#define	KPI_PROBE_RECYCLE	5
#define	KPI_PROBE_REUSE		6
void	 kpi_probe(int probe, uint64_t a0, uint64_t a1, uint64_t a2,
	    uint64_t a3);

/* panic(9) with the message msg[0..len). Does not return. */
void	 kpi_panic(const char *msg, size_t len)
	    __attribute__((__noreturn__));

/* ---- Entry points Rust provides to the shim ---- */

/* MOD_LOAD, before the device exists: 0 or errno. */
int	 ksyms_rs_load(void);
/*
 * MOD_UNLOAD: EBUSY while any open of the device is alive or under way, or
 * a cdevpriv destructor is still releasing one; otherwise 0, after which no
 * new open succeeds and the shim destroys the device. Releases the cached
 * snapshot.
 */
int	 ksyms_rs_unload(void);
/*
 * d_open: 0 or errno. On error, nothing is left behind (no cdevpriv set).
 * cache is whether the snapshot cache is on: the debug.ksyms.cache loader
 * tunable and read-write sysctl (default 1), read at each open.
 */
int	 ksyms_rs_open(int fflags, int cache);
/* d_read: 0 or errno. offset is uio->uio_offset, where the read starts. */
int	 ksyms_rs_read(struct uio *uio, int64_t offset);
/*
 * d_ioctl: 0 or errno. data is the kernel copy of the argument, len bytes:
 * IOCPARM_LEN(cmd).
 */
int	 ksyms_rs_ioctl(unsigned long cmd, void *data, size_t len);
/* d_mmap_single: 0 and a referenced object in *objp, or errno. */
int	 ksyms_rs_mmap_single(uint64_t *offset, uint64_t size,
	    struct vm_object **objp, int nprot);
/* The cdevpriv destructor: the last reference to an open file is gone. */
void	 ksyms_rs_cdevpriv_dtor(void *priv);
/* kld_load, kld_unload_try and kld_unload events: the linker files changed. */
void	 ksyms_rs_kld_changed(void);
/*
 * The permissions of /dev/ksyms: value, the debug.ksyms.mode loader tunable,
 * if found is non-zero. 0 and the mode in *mode, or EINVAL when the value is
 * refused; *mode is then the default, and the shim says so on the console.
 */
int	 ksyms_rs_device_mode(int found, int value, int *mode);
/*
 * For the read-only sysctl debug.ksyms.cached_bytes: the size of the cached
 * snapshot, memory kept even while no open uses it (0 when nothing is cached).
 */
uint64_t ksyms_rs_cached_bytes(void);
/*
 * For the read-only sysctl debug.ksyms.spare_bytes: the size of the stale
 * snapshot kept after a module change for the next build to write over (0
 * when none is kept).
 */
uint64_t ksyms_rs_spare_bytes(void);
/*
 * process_exit event: p is going away, its address space (with the
 * automatic mapping) and its hold on the device with it.
 */
void	 ksyms_rs_proc_exit(struct proc *p);
/*
 * process_exec event: p's address space, with the automatic mapping, is
 * replaced; p keeps its descriptors, and so its hold on the device.
 */
void	 ksyms_rs_proc_exec(struct proc *p);

#endif /* !_KSYMS_KPI_H_ */
