/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * ksyms_shim.c: the C half of ksyms.ko, the only file that includes kernel
 * headers. It implements the kpi_* services of ksyms_kpi.h (documented there)
 * over kernel functions, macros and kobj methods, forwards every cdevsw call
 * and event to Rust's ksyms_rs_* entry points, and declares what only C can:
 * the cdevsw, the module, the lock, the sysctls and the SDT probes (ksyms(4)).
 * It decides nothing; what Rust guarantees is asserted under INVARIANTS.
 */

#include <sys/param.h>
#include <sys/systm.h>
#include <sys/conf.h>
#include <sys/eventhandler.h>
#include <sys/fcntl.h>
#include <sys/ioccom.h>
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
#include <sys/sdt.h>
#include <sys/sx.h>
#include <sys/syscallsubr.h>
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
CTASSERT(KPI_PAGE_SIZE == PAGE_SIZE);
CTASSERT(KPI_OBJECT_MAX == (uint64_t)OFF_MAX - PAGE_MASK);
CTASSERT(sizeof(vm_ooffset_t) == sizeof(uint64_t));
CTASSERT(sizeof(Elf_Sym) == 24);

static MALLOC_DEFINE(M_KSYMS, KSYMS_NAME, "ksyms(4) open file state");

SDT_PROVIDER_DEFINE(ksyms);
SDT_PROBE_DEFINE1(ksyms, , snapshot, build__start, "uint32_t");
SDT_PROBE_DEFINE4(ksyms, , snapshot, build__done, "uint32_t", "int",
    "uint64_t", "uint64_t");
SDT_PROBE_DEFINE1(ksyms, , snapshot, cache__hit, "uint64_t");
SDT_PROBE_DEFINE2(ksyms, , snapshot, recycle, "uint64_t", "int");
SDT_PROBE_DEFINE3(ksyms, , snapshot, reuse, "uint32_t", "uint64_t", "uint32_t");
SDT_PROBE_DEFINE4(ksyms, , open, map, "uintptr_t", "uint64_t", "int",
    "uintptr_t");
SDT_PROBE_DEFINE1(ksyms, , open, refused, "int");

/*
 * The linker runs the lock's SYSINIT and registers the sysctls, disabled,
 * before MOD_LOAD, enables them after it, and after MOD_UNLOAD removes them
 * before the lock's SYSUNINIT: no sysctl handler finds the lock missing
 * (kern_linker.c: linker_load_file, linker_file_unload).
 */
static struct sx ksyms_lock;
SX_SYSINIT(ksyms_lock, &ksyms_lock, KSYMS_NAME);
/* Set when MOD_LOAD completed: MOD_UNLOAD also follows a failed one. */
static struct cdev *ksyms_dev;
static eventhandler_tag ksyms_kld_load_tag;
static eventhandler_tag ksyms_kld_unload_try_tag;
static eventhandler_tag ksyms_kld_unload_tag;
static eventhandler_tag ksyms_exit_tag;
static eventhandler_tag ksyms_exec_tag;
static int ksyms_mode;
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
	/* sx(9) catches recursion only under INVARIANTS. */
	if (sx_xlocked(&ksyms_lock))
		panic("ksyms: ksyms_lock taken recursively");
	sx_xlock(&ksyms_lock);
}

void
kpi_unlock(void)
{
	sx_xunlock(&ksyms_lock);
}

int
kpi_linker_foreach(kpi_linker_cb *cb, void *ctx)
{
	/* Lock order: kld_sx before ksyms_lock. */
	sx_assert(&ksyms_lock, SA_UNLOCKED);
	/* kpi_linker_cb and linker_predicate_t are the same function type. */
	return (linker_file_foreach(cb, ctx));
}

void
kpi_linker_file(struct linker_file *lf, struct kpi_linker_file *f)
{
	const Elf_Sym *symtab;
	caddr_t strtab;

	symtab = NULL;
	strtab = NULL;
	f->nsyms = LINKER_SYMTAB_GET(lf, &symtab);
	f->strsz = LINKER_STRTAB_GET(lf, &strtab);
	f->symtab = symtab;
	f->strtab = strtab;
	f->id = lf->id;
	f->loadcnt = lf->loadcnt;
}

int
kpi_symbol_value(struct linker_file *lf, const void *sym, uint64_t *value)
{
	linker_symval_t sv;
	int error;

	error = LINKER_DEBUG_SYMBOL_VALUES(lf, sym, &sv);
	if (error == 0)
		*value = (uintptr_t)sv.value;
	return (error);
}

struct vm_object *
kpi_object_alloc(uint64_t size)
{
	KASSERT(size <= KPI_OBJECT_MAX, ("ksyms: object of %ju bytes",
	    (uintmax_t)size));
	return (vm_pager_allocate(OBJT_SWAP, NULL, round_page(size),
	    VM_PROT_DEFAULT, 0, NULL));
}

int
kpi_object_recycle(struct vm_object *obj, uint64_t size)
{
	vm_pindex_t keep;

	KASSERT(size <= KPI_OBJECT_MAX, ("ksyms: recycle for %ju bytes",
	    (uintmax_t)size));
	keep = atop(round_page(size));
	VM_OBJECT_WLOCK(obj);
	/*
	 * Only the snapshot code hands out references, and only to an object
	 * it holds one of: at 1, nobody can take another while we write.
	 */
	if (obj->ref_count != 1 || keep > obj->size) {
		VM_OBJECT_WUNLOCK(obj);
		return (EBUSY);
	}
	vm_object_page_remove(obj, keep, 0, 0);
	/*
	 * Pages below keep hold the stale snapshot: the build keeps some as they
	 * are (paged out or not) and writes over the others, which stay dirty
	 * until laundered anew, so their swap copies are never read back.
	 */
	vm_pager_freespace(obj, keep, obj->size - keep);
	VM_OBJECT_WUNLOCK(obj);
	return (0);
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
 * uiomove_object(9) without its vm_page_activate() of every page copied: an
 * atomic update of the page's queue state per page and read, which the base
 * system's driver, whose OBJT_PHYS pages are unmanaged, never pays. A page
 * read is marked referenced instead (a flag test; an atomic only when the
 * page daemon has cleared the flag since), which keeps it active just as
 * well. A page not resident (paged out) goes through uiomove_object, which
 * pages it in.
 */
int
kpi_object_read(struct vm_object *obj, uint64_t obj_size, struct uio *uio)
{
	vm_page_t m;
	vm_pindex_t idx;
	ssize_t resid;
	size_t len;
	int error, offset;

	KASSERT(obj_size <= KPI_OBJECT_MAX && uio->uio_offset >= 0,
	    ("ksyms: read at %jd of %ju", (intmax_t)uio->uio_offset,
	    (uintmax_t)obj_size));
	error = 0;
	while ((resid = uio->uio_resid) > 0 &&
	    uio->uio_offset < (off_t)obj_size) {
		idx = OFF_TO_IDX(uio->uio_offset);
		offset = uio->uio_offset & PAGE_MASK;
		len = MIN(MIN((size_t)resid, obj_size - uio->uio_offset),
		    PAGE_SIZE - offset);
		if (vm_page_grab_valid_unlocked(&m, obj, idx, VM_ALLOC_SBUSY |
		    VM_ALLOC_IGN_SBUSY | VM_ALLOC_NOCREAT) == VM_PAGER_OK) {
			error = uiomove_fromphys(&m, offset, len, uio);
			if ((vm_page_astate_load(m).flags & PGA_REFERENCED) == 0)
				vm_page_reference(m);
			vm_page_sunbusy(m);
		} else
			error = uiomove_object(obj, MIN((off_t)obj_size,
			    IDX_TO_OFF(idx + 1)), uio);
		if (error != 0 || uio->uio_resid == resid)
			break;
	}
	return (error);
}

/*
 * Returns how many pages were grabbed. Not zeroed: the caller writes all of
 * each (a recycled object's pages are valid with old bytes, which nobody can
 * read: the caller holds the only reference). Busied, so that nothing else
 * touches them, and wired, so that they stay at their physical address, until
 * kpi_object_pages_release. One object lock for the whole run.
 */
int
kpi_object_pages_grab(struct vm_object *obj, uint64_t pindex, int count,
    struct vm_page **m, void **va)
{
	vm_page_t p;
	int i;

	KASSERT(count > 0, ("ksyms: grab of %d pages", count));
	VM_OBJECT_WLOCK(obj);
	KASSERT(obj->ref_count == 1, ("ksyms: grab in object %p with %u refs",
	    obj, obj->ref_count));
	for (i = 0; i < count && pindex + i < obj->size; i++) {
		p = vm_page_grab(obj, pindex + i,
		    VM_ALLOC_NORMAL | VM_ALLOC_WIRED);
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

	KASSERT(count > 0, ("ksyms: release of %d pages", count));
	for (i = 0; i < count; i++) {
		if (written) {
			vm_page_valid(m[i]);
			vm_page_set_dirty(m[i]);
		}
		vm_page_xunbusy(m[i]);
		vm_page_unwire(m[i], PQ_ACTIVE);
	}
}

struct proc *
kpi_curproc(void)
{
	return (curproc);
}

void
kpi_vm_layout(struct kpi_vm_layout *layout)
{
	struct vmspace *vms;

	vms = curproc->p_vmspace;
	layout->map_min = vm_map_min(&vms->vm_map);
	layout->map_max = vm_map_max(&vms->vm_map);
	layout->data_start = (uintptr_t)vms->vm_daddr;
	layout->data_limit = lim_max(curthread, RLIMIT_DATA);
}

int
kpi_map_object(struct vm_object *obj, uint64_t len, uint64_t hint,
    uint64_t *uaddr)
{
	struct thread *td;
	vm_map_t map;
	vm_offset_t addr, default_addr;
	int error;

	KASSERT(len != 0 && (len & PAGE_MASK) == 0 && hint != 0 &&
	    (hint & PAGE_MASK) == 0, ("ksyms: map %#jx at %#jx",
	    (uintmax_t)len, (uintmax_t)hint));
	td = curthread;
	map = &td->td_proc->p_vmspace->vm_map;
	vm_object_reference(obj);
	addr = hint;
	if ((map->flags & MAP_WIREFUTURE) != 0) {
		/* mlockall(MCL_FUTURE): vm_mmap_object wires what it maps. */
		error = vm_mmap_object(map, &addr, len, VM_PROT_READ,
		    VM_PROT_READ, MAP_SHARED, obj, 0, FALSE, td);
	} else {
		/*
		 * vm_mmap_object's steps for a MAP_SHARED object mapping,
		 * less MAP_PREFAULT_PARTIAL: no page enters the pmap now, so
		 * neither this nor the removal at close touches up to 96
		 * page table entries that most openers never use. A
		 * KIOCGADDR user faults the pages in as it reads them.
		 */
		error = kern_mmap_racct_check(td, map, len);
		if (error == 0) {
			default_addr = round_page((vm_offset_t)
			    td->td_proc->p_vmspace->vm_daddr +
			    lim_max(td, RLIMIT_DATA));
			error = vm_mmap_to_errno(vm_map_find_min(map, obj, 0,
			    &addr, len, default_addr, 0, VMFS_OPTIMAL_SPACE,
			    VM_PROT_READ, VM_PROT_READ, MAP_INHERIT_SHARE));
		}
	}
	if (error != 0) {
		vm_object_deallocate(obj);
		return (error);
	}
	*uaddr = addr;
	return (0);
}

void
kpi_unmap_object(struct proc *p, uint64_t uaddr, uint64_t len,
    struct vm_object *obj)
{
	struct vmspace *vm;
	vm_map_t map;
	vm_map_entry_t entry;

	KASSERT(len != 0 && (len & PAGE_MASK) == 0 && uaddr + len > uaddr,
	    ("ksyms: unmap %#jx at %#jx", (uintmax_t)len, (uintmax_t)uaddr));
	vm = vmspace_acquire_ref(p);
	if (vm == NULL)
		return;
	map = &vm->vm_map;
	/* One hold of the map lock for the check and the removal. */
	vm_map_lock(map);
	if (vm_map_lookup_entry(map, uaddr, &entry) &&
	    entry->start == uaddr && entry->end == uaddr + len &&
	    (entry->eflags & MAP_ENTRY_IS_SUB_MAP) == 0 &&
	    entry->object.vm_object == obj && entry->offset == 0)
		(void)vm_map_delete(map, uaddr, uaddr + len);
	vm_map_unlock(map);
	vmspace_free(vm);
}

int
kpi_set_cdevpriv(void *priv)
{
	return (devfs_set_cdevpriv(priv, ksyms_rs_cdevpriv_dtor));
}

int
kpi_get_cdevpriv(void **priv)
{
	return (devfs_get_cdevpriv(priv));
}

void
kpi_probe(int probe, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
	switch (probe) {
	case KPI_PROBE_BUILD_START:
		SDT_PROBE1(ksyms, , snapshot, build__start, a0);
		break;
	case KPI_PROBE_BUILD_DONE:
		SDT_PROBE4(ksyms, , snapshot, build__done, a0, a1, a2, a3);
		break;
	case KPI_PROBE_CACHE_HIT:
		SDT_PROBE1(ksyms, , snapshot, cache__hit, a0);
		break;
	case KPI_PROBE_MAP:
		SDT_PROBE4(ksyms, , open, map, a0, a1, a2, a3);
		break;
	case KPI_PROBE_OPEN_REFUSED:
		SDT_PROBE1(ksyms, , open, refused, a0);
		break;
	case KPI_PROBE_RECYCLE:
		SDT_PROBE2(ksyms, , snapshot, recycle, a0, a1);
		break;
	case KPI_PROBE_REUSE:
		SDT_PROBE3(ksyms, , snapshot, reuse, a0, a1, a2);
		break;
	default:
		KASSERT(false, ("ksyms: probe %d", probe));
	}
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

static int
ksyms_open(struct cdev *dev __unused, int oflags, int devtype __unused,
    struct thread *td __unused)
{
	return (ksyms_rs_open(oflags, atomic_load_int(&ksyms_cache) != 0));
}

static int
ksyms_read(struct cdev *dev __unused, struct uio *uio, int ioflag __unused)
{
	return (ksyms_rs_read(uio, uio->uio_offset));
}

static int
ksyms_ioctl(struct cdev *dev __unused, u_long cmd, caddr_t data,
    int fflag __unused, struct thread *td __unused)
{
	return (ksyms_rs_ioctl(cmd, data, IOCPARM_LEN(cmd)));
}

static int
ksyms_mmap_single(struct cdev *dev __unused, vm_ooffset_t *offset,
    vm_size_t size, struct vm_object **objp, int nprot)
{
	/* vm_ooffset_t is int64_t: uint64_t may alias it. */
	return (ksyms_rs_mmap_single((uint64_t *)offset, size, objp, nprot));
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

/* arg2: 0 for the cached snapshot's size, 1 for the spare's. */
static int
ksyms_sysctl_bytes(SYSCTL_HANDLER_ARGS)
{
	uint64_t bytes;

	bytes = arg2 == 0 ? ksyms_rs_cached_bytes() : ksyms_rs_spare_bytes();
	return (sysctl_handle_64(oidp, &bytes, 0, req));
}

static SYSCTL_NODE(_debug, OID_AUTO, ksyms, CTLFLAG_RD | CTLFLAG_MPSAFE, 0,
    "ksyms(4): the kernel symbol table device");
SYSCTL_INT(_debug_ksyms, OID_AUTO, mode, CTLFLAG_RD | CTLFLAG_MPSAFE,
    &ksyms_mode, 0, "Permissions of /dev/ksyms (loader tunable)");
SYSCTL_INT(_debug_ksyms, OID_AUTO, cache, CTLFLAG_RWTUN | CTLFLAG_MPSAFE,
    &ksyms_cache, 0,
    "Share the snapshot between opens while the module set stays");
SYSCTL_PROC(_debug_ksyms, OID_AUTO, cached_bytes,
    CTLTYPE_U64 | CTLFLAG_RD | CTLFLAG_MPSAFE, NULL, 0,
    ksyms_sysctl_bytes, "QU", "Size of the cached snapshot (bytes)");
SYSCTL_PROC(_debug_ksyms, OID_AUTO, spare_bytes,
    CTLTYPE_U64 | CTLFLAG_RD | CTLFLAG_MPSAFE, NULL, 1,
    ksyms_sysctl_bytes, "QU",
    "Size of the stale snapshot kept for the next build to reuse (bytes)");

/* ---- The module ---- */

/* The permissions of /dev/ksyms, from the debug.ksyms.mode tunable. */
static int
ksyms_device_mode(void)
{
	int found, mode, value;

	value = 0;
	found = TUNABLE_INT_FETCH("debug.ksyms.mode", &value);
	if (ksyms_rs_device_mode(found, value, &mode) != 0)
		printf("ksyms: debug.ksyms.mode %#o refused (see ksyms(4)); "
		    "using %#o\n", (u_int)value, (u_int)mode);
	return (mode);
}

/* eventhandler_register(9) sleeps for memory and never fails. */
static void
ksyms_handlers_register(void)
{
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
}

/* Waits for handlers running on other CPUs. */
static void
ksyms_handlers_deregister(void)
{
	EVENTHANDLER_DEREGISTER(process_exec, ksyms_exec_tag);
	EVENTHANDLER_DEREGISTER(process_exit, ksyms_exit_tag);
	EVENTHANDLER_DEREGISTER(kld_unload, ksyms_kld_unload_tag);
	EVENTHANDLER_DEREGISTER(kld_unload_try, ksyms_kld_unload_try_tag);
	EVENTHANDLER_DEREGISTER(kld_load, ksyms_kld_load_tag);
}

/*
 * MOD_LOAD: Rust's state, the event handlers, then the device, which makes
 * the module reachable. 0, or the first errno after undoing what was done.
 */
static int
ksyms_load(void)
{
	struct make_dev_args args;
	int error;

	ksyms_mode = ksyms_device_mode();
	error = ksyms_rs_load();
	if (error != 0)
		return (error);
	ksyms_handlers_register();
	make_dev_args_init(&args);
	args.mda_flags = MAKEDEV_WAITOK | MAKEDEV_CHECKNAME;
	args.mda_devsw = &ksyms_cdevsw;
	args.mda_uid = UID_ROOT;
	args.mda_gid = GID_WHEEL;
	args.mda_mode = ksyms_mode;
	error = make_dev_s(&args, &ksyms_dev, KSYMS_NAME);
	if (error != 0) {
		ksyms_handlers_deregister();
		/* Nothing can have opened the device: it never existed. */
		(void)ksyms_rs_unload();
		return (error);
	}
	return (0);
}

/*
 * MOD_UNLOAD: EBUSY while the device is open (Rust decides); otherwise
 * everything MOD_LOAD made is undone. Mappings made with mmap(2) keep their
 * own references to VM objects that need no code of this module.
 */
static int
ksyms_unload(void)
{
	int error;

	if (ksyms_dev == NULL)
		return (0);
	error = ksyms_rs_unload();
	if (error != 0)
		return (error);
	/* No open can succeed any more; wait for threads still in a method. */
	destroy_dev(ksyms_dev);
	ksyms_dev = NULL;
	ksyms_handlers_deregister();
	return (0);
}

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
