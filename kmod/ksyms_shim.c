/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * ksyms_shim.c: the C half of ksyms.ko.
 *
 * This is the only file of the module that includes kernel headers. It
 * provides the kpi_* services of ksyms_kpi.h as thin wrappers over kernel
 * functions, macros and kobj methods, forwards every cdevsw method and every
 * event to the ksyms_rs_* entry points of the Rust crate, and owns what only C
 * can declare: the cdevsw, the module, the lock, the sysctls and tunables.
 * It makes no decision of its own: sizes, bounds, states and errors are
 * decided in Rust (src/device.rs), where the host tests reach them.
 *
 * Loader tunables and sysctls (debug.ksyms.*):
 *   mode	 (tunable, read at load; read-only sysctl) the permissions of
 *		 /dev/ksyms: 0400 (the default: root only), 0440 (also group
 *		 wheel) or 0444 (everyone). Any other value is refused with a
 *		 console message and 0400 is used. A symbol table of the running
 *		 kernel is an address map of it, hence root only by default.
 *		 E.g. in /boot/loader.conf, or `kenv debug.ksyms.mode=0444`
 *		 before kldload: debug.ksyms.mode="0444".
 *   cache	 (tunable and read-write sysctl, default 1) whether opens share
 *		 the snapshot already built while the module set is unchanged.
 *   cached_bytes (read-only sysctl) the size of the cached snapshot, kept
 *		 even while no open uses it (0 when nothing is cached).
 */

#include <sys/param.h>
#include <sys/systm.h>
#include <sys/conf.h>
#include <sys/eventhandler.h>
#include <sys/fcntl.h>
#include <sys/kernel.h>
#include <sys/limits.h>
#include <sys/linker.h>
#include <sys/lock.h>
#include <sys/malloc.h>
#include <sys/mman.h>
#include <sys/module.h>
#include <sys/proc.h>
#include <sys/resourcevar.h>
#include <sys/rwlock.h>
#include <sys/sx.h>
#include <sys/sysctl.h>
#include <sys/uio.h>

#include <machine/elf.h>

#include <vm/vm.h>
#include <vm/vm_param.h>
#include <vm/pmap.h>
#include <vm/vm_extern.h>
#include <vm/vm_map.h>
#include <vm/vm_object.h>
#include <vm/vm_page.h>
#include <vm/vm_pager.h>

#include "linker_if.h"

#include "ksyms_kpi.h"

#define	KSYMS_NAME	"ksyms"

/* The boundary's constants are the kernel's own. */
CTASSERT(KPI_FREAD == FREAD);
CTASSERT(KPI_FWRITE == FWRITE);
CTASSERT(KPI_PROT_READ == VM_PROT_READ);
CTASSERT(KPI_PROT_WRITE == VM_PROT_WRITE);
CTASSERT(KPI_PROT_EXEC == VM_PROT_EXECUTE);
CTASSERT(sizeof(vm_ooffset_t) == sizeof(uint64_t));
CTASSERT(sizeof(Elf_Sym) == 24);
CTASSERT(KPI_PAGE_SIZE == PAGE_SIZE);

static MALLOC_DEFINE(M_KSYMS, KSYMS_NAME, "ksyms(4) open file state");

static struct sx ksyms_lock;
static struct cdev *ksyms_dev;
static struct sysctl_ctx_list ksyms_sysctl_ctx;
static eventhandler_tag ksyms_kld_load_tag;
static eventhandler_tag ksyms_kld_unload_try_tag;
static eventhandler_tag ksyms_kld_unload_tag;
static eventhandler_tag ksyms_exit_tag;
static eventhandler_tag ksyms_exec_tag;
/* Whether MOD_LOAD completed: the kernel sends MOD_UNLOAD after a failed one. */
static bool ksyms_loaded;

static int ksyms_mode = 0400;
static int ksyms_cache = 1;

/* ---- Services for Rust (ksyms_kpi.h) ---- */

void *
kpi_malloc(size_t size)
{

	return (malloc(size, M_KSYMS, M_WAITOK | M_ZERO));
}

void
kpi_free(void *p)
{

	free(p, M_KSYMS);
}

void
kpi_lock(void)
{

	/*
	 * Rust hands out one exclusive reference to its state per hold of
	 * this lock; a recursive hold would give two. sx(9) catches recursion
	 * only under INVARIANTS, so check here too.
	 */
	if (sx_xlocked(&ksyms_lock))
		panic("ksyms: ksyms_lock taken recursively");
	sx_xlock(&ksyms_lock);
}

void
kpi_unlock(void)
{

	sx_xunlock(&ksyms_lock);
}

/*
 * Returns 0 when cb returned 0 for every linker file, else cb's first
 * non-zero return value (an errno or any other value Rust chose).
 */
int
kpi_linker_foreach(kpi_linker_cb *cb, void *ctx)
{

	/* kpi_linker_cb and linker_predicate_t are the same function type. */
	return (linker_file_foreach(cb, ctx));
}

int
kpi_lf_id(struct linker_file *lf)
{

	return (lf->id);
}

long
kpi_symtab_get(struct linker_file *lf, const void **symtab)
{
	const Elf_Sym *st;
	long n;

	st = NULL;
	n = LINKER_SYMTAB_GET(lf, &st);
	*symtab = st;
	return (n);
}

long
kpi_strtab_get(struct linker_file *lf, const char **strtab)
{
	caddr_t s;
	long n;

	s = NULL;
	n = LINKER_STRTAB_GET(lf, &s);
	*strtab = s;
	return (n);
}

/*
 * Returns 0 and the symbol's address in *value, or the linker's errno
 * (ENOENT: the symbol is not in lf's table).
 */
int
kpi_symbol_value(struct linker_file *lf, const void *sym, uint64_t *value)
{
	linker_symval_t sv;
	int error;

	error = LINKER_SYMBOL_VALUES(lf, sym, &sv);
	if (error == 0)
		*value = (uintptr_t)sv.value;
	return (error);
}

struct vm_object *
kpi_object_alloc(uint64_t size)
{

	if (size > (uint64_t)OFF_MAX - PAGE_MASK)
		return (NULL);
	/*
	 * Swap-backed and pageable. Charged to no one's credentials: the
	 * snapshot may be shared by every opener and outlive the first one
	 * in the cache, and a charge would pin that opener's ucred (and
	 * jail) until the next module change.
	 */
	return (vm_pager_allocate(OBJT_SWAP, NULL, round_page(size),
	    VM_PROT_DEFAULT, 0, NULL));
}

void
kpi_object_ref(struct vm_object *obj)
{

	vm_object_reference(obj);
}

void
kpi_object_release(struct vm_object *obj)
{

	vm_object_deallocate(obj);
}

/*
 * Returns 0 (also at or past the end: nothing is copied), EINVAL for a
 * negative offset or a size that is not an off_t, else uiomove's errno
 * (EFAULT: a bad user buffer).
 */
int
kpi_object_read(struct vm_object *obj, uint64_t obj_size, struct uio *uio)
{

	if (obj_size > OFF_MAX || uio->uio_offset < 0)
		return (EINVAL);
	return (uiomove_object(obj, (off_t)obj_size, uio));
}

/*
 * Returns how many pages were grabbed. Not zeroed: the caller writes all of
 * each before it becomes valid. Busied, so that nothing else touches them,
 * and wired, so that they stay at their physical address, until
 * kpi_object_pages_release. One object lock for the whole run.
 */
int
kpi_object_pages_grab(struct vm_object *obj, uint64_t pindex, int count,
    struct vm_page **m, void **va)
{
	vm_page_t p;
	int i;

	VM_OBJECT_WLOCK(obj);
	for (i = 0; i < count && pindex + i < obj->size; i++) {
		p = vm_page_grab(obj, pindex + i,
		    VM_ALLOC_NORMAL | VM_ALLOC_WIRED);
		if (!vm_page_none_valid(p)) {
			/* Written before: not ours to write again. */
			vm_page_xunbusy(p);
			vm_page_unwire(p, PQ_ACTIVE);
			break;
		}
		m[i] = p;
		va[i] = (void *)PHYS_TO_DMAP(VM_PAGE_TO_PHYS(p));
	}
	VM_OBJECT_WUNLOCK(obj);
	return (i);
}

void
kpi_object_pages_release(struct vm_page *const *m, int count, int written)
{
	int i;

	for (i = 0; i < count; i++) {
		if (written) {
			vm_page_valid(m[i]);
			vm_page_set_dirty(m[i]);
		}
		vm_page_xunbusy(m[i]);
		vm_page_unwire(m[i], PQ_ACTIVE);
	}
}

int64_t
kpi_uio_offset(struct uio *uio)
{

	return (uio->uio_offset);
}

struct proc *
kpi_curproc(void)
{

	return (curproc);
}

/*
 * Maps obj read-only (maximum protection read) and shared (MAP_SHARED, so
 * children forked later inherit it) into the current process, where the VM
 * system finds room. The search starts where mmap(2) starts it for a file
 * mapping given no address (kern_mmap_req): past the largest heap the process
 * may grow, so that the snapshot lands neither just above page 0 nor inside
 * the heap's range, which is where a search from 0 would put it in a process
 * without ASLR (13.x's default). That is only a hint, never a fixed address:
 * when there is no room above it, the search runs again from the bottom, so
 * no limit value can make the mapping fail. A 32-bit process's map ends below
 * 4 GiB (sv_maxuser, FREEBSD32_MAXUSER), and vm_map_find never places anything
 * past the map's end. The mapping gets its own reference.
 * Returns 0 and the address in *uaddr, EINVAL for a size of 0 or too large,
 * else vm_mmap_object's errno (ENOMEM: no room).
 */
int
kpi_map_object(struct vm_object *obj, uint64_t size, uint64_t *uaddr)
{
	struct thread *td;
	struct vmspace *vms;
	vm_offset_t addr, hint;
	rlim_t heap;
	int error;

	if (size == 0 || size > (uint64_t)OFF_MAX - PAGE_MASK)
		return (EINVAL);
	td = curthread;
	vms = td->td_proc->p_vmspace;
	heap = lim_max(td, RLIMIT_DATA);
	hint = 0;
	if (heap < vm_map_max(&vms->vm_map) - (vm_offset_t)vms->vm_daddr)
		hint = round_page((vm_offset_t)vms->vm_daddr + heap);
	vm_object_reference(obj);
	addr = hint;
	error = vm_mmap_object(&vms->vm_map, &addr, round_page(size),
	    VM_PROT_READ, VM_PROT_READ, MAP_SHARED, obj, 0, FALSE, td);
	if (error == ENOMEM && hint != 0) {
		addr = 0;
		error = vm_mmap_object(&vms->vm_map, &addr, round_page(size),
		    VM_PROT_READ, VM_PROT_READ, MAP_SHARED, obj, 0, FALSE, td);
	}
	if (error != 0) {
		vm_object_deallocate(obj);
		return (error);
	}
	*uaddr = addr;
	return (0);
}

void
kpi_unmap_object(struct proc *p, uint64_t uaddr, uint64_t size,
    struct vm_object *obj)
{
	struct vmspace *vm;
	vm_map_t map;
	vm_map_entry_t entry;
	vm_offset_t start, end;

	if (size == 0 || size > (uint64_t)OFF_MAX - PAGE_MASK ||
	    uaddr > UINT64_MAX - round_page(size))
		return;
	start = uaddr;
	end = uaddr + round_page(size);
	vm = vmspace_acquire_ref(p);
	if (vm == NULL)
		return;
	map = &vm->vm_map;
	vm_map_lock(map);
	/*
	 * Only our mapping, untouched: one entry covering exactly the range,
	 * of this object from its start. The process may have unmapped it and
	 * mapped something else there, or split it with mprotect(2); then the
	 * range is left alone (it goes away with the process).
	 */
	if (vm_map_lookup_entry(map, start, &entry) &&
	    entry->start == start && entry->end == end &&
	    (entry->eflags & MAP_ENTRY_IS_SUB_MAP) == 0 &&
	    entry->object.vm_object == obj && entry->offset == 0)
		(void)vm_map_delete(map, start, end);
	vm_map_unlock(map);
	vmspace_free(vm);
}

/* Returns 0, or devfs's errno (ENOENT: not called from a cdevsw method). */
int
kpi_set_cdevpriv(void *priv)
{

	return (devfs_set_cdevpriv(priv, ksyms_rs_cdevpriv_dtor));
}

/* Returns 0 and the open file's private data, or devfs's errno (EBADF). */
int
kpi_get_cdevpriv(void **priv)
{

	return (devfs_get_cdevpriv(priv));
}

int
kpi_cache_enabled(void)
{

	return (atomic_load_int(&ksyms_cache) != 0);
}

void
kpi_panic(const char *msg, size_t len)
{

	panic("%.*s", (int)MIN(len, (size_t)INT_MAX), msg);
}

/* ---- The device ---- */

static d_open_t ksyms_open;
static d_read_t ksyms_read;
static d_ioctl_t ksyms_ioctl;
static d_mmap_single_t ksyms_mmap_single;

static struct cdevsw ksyms_cdevsw = {
	.d_version =	D_VERSION,
	.d_open =	ksyms_open,
	.d_read =	ksyms_read,
	.d_ioctl =	ksyms_ioctl,
	.d_mmap_single = ksyms_mmap_single,
	.d_name =	KSYMS_NAME,
};

/*
 * open(2): 0, or Rust's errno (EPERM: write access asked; EBUSY: this
 * process already has the device open; ENXIO: the module set kept changing
 * or the module is going away; ENOMEM).
 */
static int
ksyms_open(struct cdev *dev __unused, int oflags, int devtype __unused,
    struct thread *td __unused)
{

	return (ksyms_rs_open(oflags));
}

/* read(2): 0 (also at EOF), or Rust's errno (EINVAL, EFAULT, EBADF). */
static int
ksyms_read(struct cdev *dev __unused, struct uio *uio, int ioflag __unused)
{

	return (ksyms_rs_read(uio));
}

/* ioctl(2): 0 for KIOCGSIZE/KIOCGADDR, or Rust's errno (ENOTTY, ...). */
static int
ksyms_ioctl(struct cdev *dev __unused, u_long cmd, caddr_t data,
    int fflag __unused, struct thread *td __unused)
{

	return (ksyms_rs_ioctl(cmd, data));
}

/*
 * mmap(2): 0 and a referenced object in *objp, or Rust's errno (EINVAL: a
 * protection other than read, or a range outside the snapshot).
 */
static int
ksyms_mmap_single(struct cdev *dev __unused, vm_ooffset_t *offset,
    vm_size_t size, struct vm_object **objp, int nprot)
{
	uint64_t off;
	int error;

	off = (uint64_t)*offset;
	error = ksyms_rs_mmap_single(&off, size, objp, nprot);
	if (error == 0)
		*offset = (vm_ooffset_t)off;
	return (error);
}

/* ---- Events ---- */

static void
ksyms_kld_load(void *arg __unused, linker_file_t lf __unused)
{

	ksyms_rs_kld_changed();
}

static void
ksyms_kld_unload_try(void *arg __unused, linker_file_t lf __unused,
    int *error __unused)
{

	ksyms_rs_kld_changed();
}

static void
ksyms_kld_unload(void *arg __unused, const char *name __unused,
    caddr_t address __unused, size_t size __unused)
{

	ksyms_rs_kld_changed();
}

static void
ksyms_process_exit(void *arg __unused, struct proc *p)
{

	ksyms_rs_proc_exit(p);
}

static void
ksyms_process_exec(void *arg __unused, struct proc *p,
    struct image_params *imgp __unused)
{

	ksyms_rs_proc_exec(p);
}

/* ---- Sysctls ---- */

/* debug.ksyms.cached_bytes: 0, or sysctl_handle_64's errno. */
static int
ksyms_sysctl_cached_bytes(SYSCTL_HANDLER_ARGS)
{
	uint64_t bytes;

	bytes = ksyms_rs_cached_bytes();
	return (sysctl_handle_64(oidp, &bytes, 0, req));
}

/*
 * The debug.ksyms tree, added at load and removed at unload, so that no
 * handler runs before the lock exists or after it is gone. Returns 0 or
 * ENOMEM.
 */
static int
ksyms_sysctl_init(void)
{
	struct sysctl_oid *node;

	sysctl_ctx_init(&ksyms_sysctl_ctx);
	node = SYSCTL_ADD_NODE(&ksyms_sysctl_ctx, SYSCTL_STATIC_CHILDREN(_debug),
	    OID_AUTO, KSYMS_NAME, CTLFLAG_RD | CTLFLAG_MPSAFE, NULL,
	    "ksyms(4): the kernel symbol table device");
	if (node == NULL ||
	    SYSCTL_ADD_INT(&ksyms_sysctl_ctx, SYSCTL_CHILDREN(node), OID_AUTO,
	    "mode", CTLFLAG_RD | CTLFLAG_MPSAFE, &ksyms_mode, 0,
	    "Permissions of /dev/ksyms (loader tunable: 0400, 0440 or 0444)") ==
	    NULL ||
	    SYSCTL_ADD_INT(&ksyms_sysctl_ctx, SYSCTL_CHILDREN(node), OID_AUTO,
	    "cache", CTLFLAG_RWTUN | CTLFLAG_MPSAFE, &ksyms_cache, 0,
	    "Share the snapshot between opens while the module set is unchanged")
	    == NULL ||
	    SYSCTL_ADD_PROC(&ksyms_sysctl_ctx, SYSCTL_CHILDREN(node), OID_AUTO,
	    "cached_bytes", CTLTYPE_U64 | CTLFLAG_RD | CTLFLAG_MPSAFE, NULL, 0,
	    ksyms_sysctl_cached_bytes, "QU",
	    "Size of the cached snapshot (bytes)") == NULL) {
		sysctl_ctx_free(&ksyms_sysctl_ctx);
		return (ENOMEM);
	}
	return (0);
}

/* ---- The module ---- */

/* The permissions of /dev/ksyms: the debug.ksyms.mode tunable, if allowed. */
static int
ksyms_device_mode(void)
{
	int mode;

	mode = 0400;
	if (TUNABLE_INT_FETCH("debug.ksyms.mode", &mode) != 0 &&
	    mode != 0400 && mode != 0440 && mode != 0444) {
		printf("ksyms: debug.ksyms.mode %#o is not 0400, 0440 or 0444; "
		    "using 0400\n", (u_int)mode);
		mode = 0400;
	}
	return (mode);
}

static void
ksyms_handlers_deregister(void)
{

	if (ksyms_exec_tag != NULL)
		EVENTHANDLER_DEREGISTER(process_exec, ksyms_exec_tag);
	if (ksyms_exit_tag != NULL)
		EVENTHANDLER_DEREGISTER(process_exit, ksyms_exit_tag);
	if (ksyms_kld_unload_tag != NULL)
		EVENTHANDLER_DEREGISTER(kld_unload, ksyms_kld_unload_tag);
	if (ksyms_kld_unload_try_tag != NULL)
		EVENTHANDLER_DEREGISTER(kld_unload_try,
		    ksyms_kld_unload_try_tag);
	if (ksyms_kld_load_tag != NULL)
		EVENTHANDLER_DEREGISTER(kld_load, ksyms_kld_load_tag);
	ksyms_exec_tag = ksyms_exit_tag = NULL;
	ksyms_kld_unload_tag = ksyms_kld_unload_try_tag = NULL;
	ksyms_kld_load_tag = NULL;
}

/*
 * MOD_LOAD: the lock, Rust's state, the sysctls, the event handlers, then the
 * device, which makes the module reachable. Returns 0, or the first errno
 * (Rust's, ENOMEM, make_dev_s's) after undoing every step already done.
 */
static int
ksyms_load(void)
{
	struct make_dev_args args;
	int error;

	ksyms_mode = ksyms_device_mode();
	sx_init(&ksyms_lock, KSYMS_NAME);
	error = ksyms_rs_load();
	if (error != 0)
		goto fail_lock;
	error = ksyms_sysctl_init();
	if (error != 0)
		goto fail_rust;

	ksyms_kld_load_tag = EVENTHANDLER_REGISTER(kld_load, ksyms_kld_load,
	    NULL, EVENTHANDLER_PRI_ANY);
	ksyms_kld_unload_try_tag = EVENTHANDLER_REGISTER(kld_unload_try,
	    ksyms_kld_unload_try, NULL, EVENTHANDLER_PRI_ANY);
	ksyms_kld_unload_tag = EVENTHANDLER_REGISTER(kld_unload,
	    ksyms_kld_unload, NULL, EVENTHANDLER_PRI_ANY);
	ksyms_exit_tag = EVENTHANDLER_REGISTER(process_exit,
	    ksyms_process_exit, NULL, EVENTHANDLER_PRI_ANY);
	ksyms_exec_tag = EVENTHANDLER_REGISTER(process_exec,
	    ksyms_process_exec, NULL, EVENTHANDLER_PRI_ANY);
	if (ksyms_kld_load_tag == NULL || ksyms_kld_unload_try_tag == NULL ||
	    ksyms_kld_unload_tag == NULL || ksyms_exit_tag == NULL ||
	    ksyms_exec_tag == NULL) {
		error = ENOMEM;
		goto fail_handlers;
	}

	make_dev_args_init(&args);
	args.mda_flags = MAKEDEV_WAITOK | MAKEDEV_CHECKNAME;
	args.mda_devsw = &ksyms_cdevsw;
	args.mda_uid = UID_ROOT;
	args.mda_gid = GID_WHEEL;
	args.mda_mode = ksyms_mode;
	error = make_dev_s(&args, &ksyms_dev, KSYMS_NAME);
	if (error != 0)
		goto fail_handlers;
	ksyms_loaded = true;
	return (0);

fail_handlers:
	ksyms_handlers_deregister();
	sysctl_ctx_free(&ksyms_sysctl_ctx);
fail_rust:
	/* Nothing can have opened the device: it never existed. */
	(void)ksyms_rs_unload();
fail_lock:
	sx_destroy(&ksyms_lock);
	return (error);
}

/*
 * MOD_UNLOAD: refused with EBUSY while the device is open (Rust decides);
 * otherwise everything MOD_LOAD made is undone and 0 is returned. Mappings
 * made with mmap(2) keep their own references to VM objects that need no
 * code of this module, so they may outlive it.
 */
static int
ksyms_unload(void)
{
	int error;

	if (!ksyms_loaded)
		return (0);
	error = ksyms_rs_unload();
	if (error != 0)
		return (error);
	/* No open can succeed any more; wait for threads still in a method. */
	destroy_dev(ksyms_dev);
	ksyms_dev = NULL;
	/* Waits for handlers running on other CPUs. */
	ksyms_handlers_deregister();
	sysctl_ctx_free(&ksyms_sysctl_ctx);
	sx_destroy(&ksyms_lock);
	ksyms_loaded = false;
	return (0);
}

/* Returns 0, or ksyms_load's or ksyms_unload's errno; EOPNOTSUPP otherwise. */
static int
ksyms_modevent(module_t mod __unused, int type, void *data __unused)
{

	switch (type) {
	case MOD_LOAD:
		return (ksyms_load());
	case MOD_UNLOAD:
		return (ksyms_unload());
	case MOD_SHUTDOWN:
		return (0);
	default:
		return (EOPNOTSUPP);
	}
}

DEV_MODULE(ksyms, ksyms_modevent, NULL);
MODULE_VERSION(ksyms, 1);
