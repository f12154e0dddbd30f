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

/* Open flags (sys/fcntl.h) and protections (sys/mman.h) as the kernel passes them. */
#define	KPI_FREAD	0x0001
#define	KPI_FWRITE	0x0002
#define	KPI_PROT_READ	0x01
#define	KPI_PROT_WRITE	0x02
#define	KPI_PROT_EXEC	0x04

/* ---- Services the shim provides to Rust ---- */

/* malloc(9), M_WAITOK | M_ZERO under M_KSYMS; NULL on failure (simulator only). */
void	*kpi_malloc(size_t size);
/* free(9) of a kpi_malloc'ed block; NULL is ignored. */
void	 kpi_free(void *p);

/* ksyms_lock, an sx(9) lock owned by the shim; sleeping under it is allowed. */
void	 kpi_lock(void);
void	 kpi_unlock(void);

/*
 * linker_file_foreach(9): calls cb(lf, ctx) for each linker file in the
 * kernel's order, the kernel (id 1) first, with kld_sx held; stops at the
 * first non-zero return and returns it.
 */
typedef int kpi_linker_cb(struct linker_file *lf, void *ctx);
int	 kpi_linker_foreach(kpi_linker_cb *cb, void *ctx);
/* lf->id. */
int	 kpi_lf_id(struct linker_file *lf);
/* LINKER_SYMTAB_GET: the number of Elf_Sym entries at *symtab. */
long	 kpi_symtab_get(struct linker_file *lf, const void **symtab);
/* LINKER_STRTAB_GET: the size in bytes of the string table at *strtab. */
long	 kpi_strtab_get(struct linker_file *lf, const char **strtab);
/*
 * LINKER_SYMBOL_VALUES for the Elf_Sym at sym (inside lf's symbol table):
 * 0 and *value set to the symbol's absolute address, or an errno when the
 * linker reports none.
 */
int	 kpi_symbol_value(struct linker_file *lf, const void *sym, uint64_t *value);

/*
 * A pageable anonymous VM object (OBJT_SWAP) of size bytes, rounded up to
 * pages, with one reference; NULL on failure.
 */
struct vm_object *kpi_object_alloc(uint64_t size);
/* vm_object_reference(9) / vm_object_deallocate(9). */
void	 kpi_object_ref(struct vm_object *obj);
void	 kpi_object_release(struct vm_object *obj);
/*
 * uiomove_object(obj, obj_size, uio): copies from obj at uio's offset to the
 * caller's buffers, stopping at obj_size. errno.
 */
int	 kpi_object_read(struct vm_object *obj, uint64_t obj_size, struct uio *uio);
/*
 * Writing a new object in place (one copy, no uio): pages pindex.. of obj, up
 * to count of them, stopping at the object's end or at a page that already
 * holds data; each allocated now (not zeroed), exclusive-busied and wired,
 * with m[i] and va[i], its direct-map address (KPI_PAGE_SIZE writable bytes).
 * Returns how many (0: pindex is past the object or holds data). Never called
 * with obj mapped anywhere, nor for a page the caller holds.
 */
#define	KPI_PAGE_SIZE	4096
int	 kpi_object_pages_grab(struct vm_object *obj, uint64_t pindex, int count,
	    struct vm_page **m, void **va);
/*
 * Gives back count pages of kpi_object_pages_grab: valid and dirty when
 * written is non-zero (every byte of each was written), else left invalid
 * (their garbage is never read and goes with the object); unbusied and
 * unwired into the active queue, pageable like any anonymous page.
 */
void	 kpi_object_pages_release(struct vm_page *const *m, int count,
	    int written);
/* uio->uio_offset. */
int64_t	 kpi_uio_offset(struct uio *uio);

/* curthread->td_proc. */
struct proc *kpi_curproc(void);
/*
 * Maps size bytes of obj read-only (max protection read) and shared into the
 * current process, where the VM system finds room (below 4 GiB for a 32-bit
 * process). The mapping holds its own object reference. *uaddr receives the
 * address. errno.
 */
int	 kpi_map_object(struct vm_object *obj, uint64_t size, uint64_t *uaddr);
/*
 * Removes the mapping [uaddr, uaddr + size) from p's address space, but only
 * if that range is still exactly one mapping of obj (the process may have
 * unmapped it and mapped something else there). p must be alive: the caller
 * holds ksyms_lock, and p's process_exit/process_exec events take it first.
 */
void	 kpi_unmap_object(struct proc *p, uint64_t uaddr, uint64_t size,
	    struct vm_object *obj);

/*
 * devfs_set_cdevpriv(priv, ksyms_rs_cdevpriv_dtor) / devfs_get_cdevpriv:
 * errno.
 */
int	 kpi_set_cdevpriv(void *priv);
int	 kpi_get_cdevpriv(void **priv);

/*
 * Whether the shared snapshot cache is on: the debug.ksyms.cache loader
 * tunable and read-write sysctl (default 1). Read at each open.
 */
int	 kpi_cache_enabled(void);

/* panic(9) with the message msg[0..len). Does not return. */
void	 kpi_panic(const char *msg, size_t len) __attribute__((__noreturn__));

/* ---- Entry points Rust provides to the shim ---- */

/* MOD_LOAD, before the device exists: 0 or errno. */
int	 ksyms_rs_load(void);
/*
 * MOD_UNLOAD: EBUSY while any open of the device is alive or under way;
 * otherwise 0, after which no new open succeeds and the shim destroys the
 * device. Releases the cached snapshot.
 */
int	 ksyms_rs_unload(void);
/* d_open: 0 or errno. On error, nothing is left behind (no cdevpriv set). */
int	 ksyms_rs_open(int fflags);
/* d_read: 0 or errno. */
int	 ksyms_rs_read(struct uio *uio);
/* d_ioctl: 0 or errno. data is the kernel copy of the argument (IOCPARM_LEN(cmd) bytes). */
int	 ksyms_rs_ioctl(unsigned long cmd, void *data);
/* d_mmap_single: 0 and a referenced object in *objp, or errno. */
int	 ksyms_rs_mmap_single(uint64_t *offset, uint64_t size,
	    struct vm_object **objp, int nprot);
/* The cdevpriv destructor: the last reference to an open file is gone. */
void	 ksyms_rs_cdevpriv_dtor(void *priv);
/* kld_load, kld_unload_try and kld_unload events: the linker file set changed. */
void	 ksyms_rs_kld_changed(void);
/*
 * For the read-only sysctl debug.ksyms.cached_bytes: the size of the cached
 * snapshot, memory kept even while no open uses it (0 when nothing is cached).
 */
uint64_t ksyms_rs_cached_bytes(void);
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
