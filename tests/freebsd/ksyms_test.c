/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * ksyms_test: checks /dev/ksyms against SPEC.md in a running FreeBSD kernel.
 *
 * Run as root on a machine where this project's ksyms.ko is loaded (not the
 * base system's /boot/kernel/ksyms.ko). Prints TAP, then "N passed, M
 * failed"; exits 0 when everything passed. It leaves the module loaded.
 *
 * Build: make -C tests/freebsd (BSD make, base system cc and libelf).
 */

#include <sys/param.h>
#include <sys/ioctl.h>
#include <sys/linker.h>
#include <sys/mman.h>
#include <sys/module.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/ksyms.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define	DEVICE		"/dev/ksyms"
#define	KERNEL_SYMBOL	"kern_kldload"
#define	MODULE_FILE	"ksyms.ko"
#define	MODULE_SYMBOL	"ksyms_rs_open"

struct syment {
	uintptr_t	 addr;
	size_t		 size;
	const char	*name;
};

static int	tests;
static int	failures;

/* The snapshot as read(2) returned it, for comparisons. */
static char	*snap;
static size_t	 snapsize;

static bool	child_faults(void (*)(void *), void *);
static int	child_opens_too(void *);
static int	child_reads_inherited(void *);
static void	check_symbol(int, const char *);
static void	check_well_formed(void);
static bool	fails_with(int, int, const char *);
static bool	has_symbol(const char *, uintptr_t, size_t);
static bool	in_child(int (*)(void *), void *);
static bool	load_like_lockstat(int, char *, size_t);
static void	ok(bool, const char *, ...) __printflike(2, 3);
static char	*read_all(int, size_t, size_t *);
static const struct syment *resolve(uintptr_t);
static int	symcmp(const void *, const void *);
static void	write_to(void *);

static void
ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	tests++;
	if (!cond)
		failures++;
	printf("%sok %d - ", cond ? "" : "not ", tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/*
 * Whether a call failed with the errno expected; says what happened if not.
 * strerror(3) returns one buffer shared by all its calls: the text of the errno
 * seen is copied before the expected one is asked for.
 */
static bool
fails_with(int ret, int expected, const char *what)
{
	char got[128];
	int error;

	error = errno;
	if (ret != -1) {
		printf("# %s: succeeded, expected errno %d (%s)\n", what,
		    expected, strerror(expected));
		return (false);
	}
	if (error != expected) {
		snprintf(got, sizeof(got), "%s", strerror(error));
		printf("# %s: errno %d (%s), expected errno %d (%s)\n", what,
		    error, got, expected, strerror(expected));
		return (false);
	}
	return (true);
}

/* Reads fd from offset 0 to end of file into a new buffer. */
static char *
read_all(int fd, size_t hint, size_t *lenp)
{
	char *buf, *nbuf;
	size_t cap, len;
	ssize_t n;

	cap = hint > 0 ? hint : 65536;
	len = 0;
	if ((buf = malloc(cap)) == NULL)
		err(1, "malloc");
	for (;;) {
		if (len == cap) {
			cap *= 2;
			if ((nbuf = realloc(buf, cap)) == NULL)
				err(1, "realloc");
			buf = nbuf;
		}
		n = pread(fd, buf + len, cap - len, (off_t)len);
		if (n == -1)
			err(1, "pread");
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*lenp = len;
	return (buf);
}

/* Runs fn in a child process; true when it exits with status 0. */
static bool
in_child(int (*fn)(void *), void *arg)
{
	pid_t pid;
	int status;

	fflush(stdout);
	if ((pid = fork()) == -1)
		err(1, "fork");
	if (pid == 0)
		_exit(fn(arg));
	if (waitpid(pid, &status, 0) == -1)
		err(1, "waitpid");
	return (WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Whether the child was killed by SIGSEGV or SIGBUS running fn. */
static bool
child_faults(void (*fn)(void *), void *arg)
{
	pid_t pid;
	int status;

	fflush(stdout);
	if ((pid = fork()) == -1)
		err(1, "fork");
	if (pid == 0) {
		fn(arg);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) == -1)
		err(1, "waitpid");
	return (WIFSIGNALED(status) &&
	    (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS));
}

static void
write_to(void *p)
{

	*(volatile char *)p = 'X';
}

/* Child: the inherited descriptor reads the same bytes, and the mapping too. */
static int
child_reads_inherited(void *arg)
{
	char *addr, *buf;
	size_t len;
	int fd;

	fd = *(int *)arg;
	buf = read_all(fd, snapsize, &len);
	if (len != snapsize || memcmp(buf, snap, len) != 0)
		return (1);
	if (ioctl(fd, KIOCGADDR, &addr) == -1)
		return (2);
	if (memcmp(addr, snap, snapsize) != 0)
		return (3);
	return (0);
}

/* Child: a process of its own may open the device while the parent holds it. */
static int
child_opens_too(void *arg __unused)
{
	char *buf;
	size_t len;
	int fd;

	if ((fd = open(DEVICE, O_RDONLY)) == -1)
		return (1);
	buf = read_all(fd, snapsize, &len);
	/* The set of modules did not change: the very same snapshot. */
	if (len != snapsize || memcmp(buf, snap, len) != 0)
		return (2);
	close(fd);
	return (0);
}

/*
 * lockstat(1)'s view (cddl/contrib/opensolaris/cmd/lockstat/sym.c): libelf,
 * the SHT_SYMTAB section and its sh_link string table, symbols with
 * type <= STT_FUNC and size != 0, sorted by value.
 */
static struct syment	*symtab;
static size_t		 nsyms;

static int
symcmp(const void *p1, const void *p2)
{
	const struct syment *a = p1, *b = p2;

	if (a->addr < b->addr)
		return (-1);
	return (a->addr > b->addr);
}

static bool
load_like_lockstat(int fd, char *why, size_t whylen)
{
	Elf *elf;
	Elf_Scn *scn;
	Elf_Data *data, *strdata;
	GElf_Shdr shdr;
	GElf_Sym sym;
	size_t i, n, strndx;

	if (elf_version(EV_CURRENT) == EV_NONE) {
		snprintf(why, whylen, "elf_version: %s", elf_errmsg(-1));
		return (false);
	}
	if ((elf = elf_begin(fd, ELF_C_READ, NULL)) == NULL) {
		snprintf(why, whylen, "elf_begin: %s", elf_errmsg(-1));
		return (false);
	}
	data = strdata = NULL;
	n = strndx = 0;
	for (scn = NULL; (scn = elf_nextscn(elf, scn)) != NULL;) {
		if (gelf_getshdr(scn, &shdr) == NULL)
			continue;
		if (shdr.sh_type == SHT_SYMTAB) {
			data = elf_getdata(scn, NULL);
			n = shdr.sh_size / shdr.sh_entsize;
			strndx = shdr.sh_link;
		}
	}
	if (data == NULL || (scn = elf_getscn(elf, strndx)) == NULL ||
	    (strdata = elf_getdata(scn, NULL)) == NULL) {
		snprintf(why, whylen, "no symbol or string table");
		return (false);
	}
	if ((symtab = calloc(n, sizeof(*symtab))) == NULL)
		err(1, "calloc");
	nsyms = 0;
	for (i = 0; i < n; i++) {
		if (gelf_getsym(data, (int)i, &sym) == NULL)
			continue;
		if (GELF_ST_TYPE(sym.st_info) > STT_FUNC || sym.st_size == 0)
			continue;
		if (sym.st_name >= strdata->d_size) {
			snprintf(why, whylen, "symbol %zu: name past .strtab",
			    i);
			return (false);
		}
		symtab[nsyms].addr = (uintptr_t)sym.st_value;
		symtab[nsyms].size = (size_t)sym.st_size;
		symtab[nsyms].name = (const char *)strdata->d_buf +
		    sym.st_name;
		nsyms++;
	}
	qsort(symtab, nsyms, sizeof(*symtab), symcmp);
	return (nsyms > 0);
}

/* lockstat's addr_to_sym: the last entry at or below addr. */
static const struct syment *
resolve(uintptr_t addr)
{
	size_t lo, hi, mid;

	if (nsyms == 0 || addr < symtab[0].addr)
		return (NULL);
	lo = 0;
	hi = nsyms;
	while (hi - lo > 1) {
		mid = (lo + hi) / 2;
		if (addr >= symtab[mid].addr)
			lo = mid;
		else
			hi = mid;
	}
	return (&symtab[lo]);
}

/* Whether the snapshot has name at value with size. */
static bool
has_symbol(const char *name, uintptr_t value, size_t size)
{
	size_t i;

	for (i = 0; i < nsyms; i++)
		if (symtab[i].addr == value && symtab[i].size == size &&
		    strcmp(symtab[i].name, name) == 0)
			return (true);
	return (false);
}

/* Checks a symbol the kernel linker knows against the libelf view. */
static void
check_symbol(int fileid, const char *name)
{
	struct kld_sym_lookup lookup;
	const struct syment *e;

	memset(&lookup, 0, sizeof(lookup));
	lookup.version = sizeof(lookup);
	lookup.symname = __DECONST(char *, name);
	if (kldsym(fileid, KLDSYM_LOOKUP, &lookup) == -1) {
		ok(false, "kldsym(%s): %s", name, strerror(errno));
		return;
	}
	ok(has_symbol(name, lookup.symvalue, lookup.symsize),
	    "%s is in the snapshot at %#lx, size %zu, as kldsym(2) says",
	    name, lookup.symvalue, lookup.symsize);
	e = resolve(lookup.symvalue + 1);
	ok(e != NULL && e->addr == lookup.symvalue,
	    "lockstat-style lookup of %s+0x1 lands on its address (%s)", name,
	    e != NULL ? e->name : "nothing");
}

/* SPEC.md's symbol table rules, on the bytes read. */
static void
check_well_formed(void)
{
	const Elf64_Ehdr *eh;
	const Elf64_Shdr *sh;
	const Elf64_Sym *sym;
	size_t i, n, locals;
	bool good, order, shndx;

	eh = (const Elf64_Ehdr *)(void *)snap;
	good = snapsize >= sizeof(*eh) && IS_ELF(*eh) &&
	    eh->e_ident[EI_CLASS] == ELFCLASS64 &&
	    eh->e_ident[EI_OSABI] == ELFOSABI_FREEBSD && eh->e_shnum == 4 &&
	    eh->e_shoff + 4 * sizeof(*sh) <= snapsize;
	ok(good, "ELF header: ELF64, FreeBSD, four sections");
	if (!good)
		return;
	sh = (const Elf64_Shdr *)(void *)(snap + eh->e_shoff);
	good = sh[1].sh_type == SHT_SYMTAB && sh[1].sh_link == 2 &&
	    sh[1].sh_entsize == sizeof(*sym) &&
	    sh[1].sh_offset + sh[1].sh_size <= snapsize &&
	    sh[2].sh_offset + sh[2].sh_size == snapsize;
	ok(good, ".symtab and .strtab where SPEC.md puts them");
	if (!good)
		return;
	sym = (const Elf64_Sym *)(void *)(snap + sh[1].sh_offset);
	n = sh[1].sh_size / sizeof(*sym);
	for (locals = 0; locals < n &&
	    ELF64_ST_BIND(sym[locals].st_info) == STB_LOCAL; locals++)
		;
	order = true;
	shndx = true;
	for (i = 0; i < n; i++) {
		if (i >= locals &&
		    ELF64_ST_BIND(sym[i].st_info) == STB_LOCAL)
			order = false;
		if (sym[i].st_shndx != SHN_UNDEF &&
		    sym[i].st_shndx != SHN_ABS)
			shndx = false;
	}
	ok(order && sh[1].sh_info == locals,
	    "locals first and sh_info %u == %zu, one past the last local",
	    sh[1].sh_info, locals);
	ok(shndx, "every st_shndx is SHN_UNDEF or SHN_ABS");
}

int
main(void)
{
	struct stat st;
	char *addr, *map, *tmp;
	size_t size, pagesz, rounded;
	ssize_t n;
	int fd, fd2, fileid, flags;
	char why[256], byte;

	setvbuf(stdout, NULL, _IOLBF, 0);
	pagesz = (size_t)getpagesize();

	if (geteuid() != 0)
		errx(2, "run as root: %s is mode 0400", DEVICE);
	if (modfind("ksyms") == -1)
		errx(2, "the ksyms module is not loaded: "
		    "kldload /boot/modules/ksyms.ko");

	/* open(2) */
	ok(fails_with(open(DEVICE, O_RDWR), EPERM, "open O_RDWR"),
	    "open O_RDWR fails with EPERM");
	ok(fails_with(open(DEVICE, O_WRONLY), EPERM, "open O_WRONLY"),
	    "open O_WRONLY fails with EPERM");
	fd = open(DEVICE, O_RDONLY);
	ok(fd != -1, "open O_RDONLY");
	if (fd == -1)
		errx(1, "%s: %s; cannot go on", DEVICE, strerror(errno));
	ok(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) &&
	    (st.st_mode & 0777) == 0400 && st.st_uid == 0,
	    "character device, mode 0400, owner root");
	fd2 = open(DEVICE, O_RDONLY);
	ok(fails_with(fd2, EBUSY, "second open"),
	    "a second open by the same process fails with EBUSY");
	if (fd2 != -1)
		close(fd2);

	/* ioctl(2) and read(2) */
	size = 0;
	ok(ioctl(fd, KIOCGSIZE, &size) == 0 && size > 0,
	    "KIOCGSIZE: %zu bytes", size);
	snap = read_all(fd, size, &snapsize);
	ok(snapsize == size, "read to end of file: %zu bytes == KIOCGSIZE",
	    snapsize);
	n = pread(fd, &byte, 1, (off_t)snapsize);
	ok(n == 0, "pread at the end returns 0");
	n = pread(fd, &byte, 1, (off_t)snapsize + 4096);
	ok(n == 0, "pread past the end returns 0");
	ok(fails_with((int)pread(fd, &byte, 1, -1), EINVAL, "pread -1"),
	    "pread at offset -1 fails with EINVAL");
	ok(fails_with(ioctl(fd, _IOR('l', 3, size_t), &size), ENOTTY,
	    "ioctl _IOR('l', 3)"), "an unknown ioctl fails with ENOTTY");

	addr = NULL;
	ok(ioctl(fd, KIOCGADDR, &addr) == 0 && addr != NULL,
	    "KIOCGADDR: %p", (void *)addr);
	if (addr != NULL) {
		ok(memcmp(addr, snap, snapsize) == 0,
		    "the KIOCGADDR mapping holds the bytes read");
		ok(child_faults(write_to, addr),
		    "a write to the KIOCGADDR mapping faults");
		ok(fails_with(mprotect(addr, pagesz, PROT_READ | PROT_WRITE),
		    EACCES, "mprotect"),
		    "the KIOCGADDR mapping cannot be made writable");
	}
	check_well_formed();

	/* mmap(2) */
	rounded = roundup2(snapsize, pagesz);
	map = mmap(NULL, snapsize, PROT_READ, MAP_SHARED, fd, 0);
	ok(map != MAP_FAILED && memcmp(map, snap, snapsize) == 0,
	    "mmap PROT_READ MAP_SHARED holds the bytes read");
	/*
	 * PROT_WRITE on a read-only descriptor is refused by devfs with EACCES
	 * before the driver is asked; the driver's own check (EINVAL) is for
	 * PROT_EXEC, which devfs lets through.
	 */
	tmp = mmap(NULL, snapsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ok(fails_with(tmp == MAP_FAILED ? -1 : 0, EACCES, "mmap PROT_WRITE"),
	    "mmap PROT_WRITE fails with EACCES");
	tmp = mmap(NULL, snapsize, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
	ok(fails_with(tmp == MAP_FAILED ? -1 : 0, EINVAL, "mmap PROT_EXEC"),
	    "mmap PROT_EXEC fails with EINVAL");
	tmp = mmap(NULL, snapsize, PROT_READ, MAP_PRIVATE, fd, 0);
	ok(fails_with(tmp == MAP_FAILED ? -1 : 0, EINVAL, "mmap MAP_PRIVATE"),
	    "mmap MAP_PRIVATE fails with EINVAL");
	tmp = mmap(NULL, pagesz, PROT_READ, MAP_SHARED, fd,
	    (off_t)(rounded - pagesz));
	ok(tmp != MAP_FAILED, "mmap of the last page");
	if (tmp != MAP_FAILED)
		munmap(tmp, pagesz);
	tmp = mmap(NULL, pagesz, PROT_READ, MAP_SHARED, fd, (off_t)rounded);
	ok(fails_with(tmp == MAP_FAILED ? -1 : 0, EINVAL, "mmap at rounded"),
	    "mmap at the rounded size fails with EINVAL");
	tmp = mmap(NULL, rounded + pagesz, PROT_READ, MAP_SHARED, fd, 0);
	ok(fails_with(tmp == MAP_FAILED ? -1 : 0, EINVAL, "mmap too long"),
	    "mmap one page too long fails with EINVAL");

	/*
	 * fcntl(2): F_SETFL sends the driver FIONBIO and FIOASYNC, which it
	 * accepts and ignores; F_SETOWN sends FIOSETOWN, which it refuses.
	 */
	flags = fcntl(fd, F_GETFL);
	ok(flags != -1 &&
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK | O_ASYNC) == 0,
	    "fcntl F_SETFL O_NONBLOCK | O_ASYNC");
	ok((fcntl(fd, F_GETFL) & (O_NONBLOCK | O_ASYNC)) ==
	    (O_NONBLOCK | O_ASYNC), "F_GETFL shows O_NONBLOCK and O_ASYNC");
	n = pread(fd, &byte, 1, 0);
	ok(n == 1 && byte == snap[0], "pread with O_NONBLOCK | O_ASYNC set");
	size = 0;
	ok(ioctl(fd, KIOCGSIZE, &size) == 0 && size == snapsize,
	    "KIOCGSIZE with O_NONBLOCK | O_ASYNC set");
	tmp = mmap(NULL, snapsize, PROT_READ, MAP_SHARED, fd, 0);
	ok(tmp != MAP_FAILED && memcmp(tmp, snap, snapsize) == 0,
	    "mmap with O_NONBLOCK | O_ASYNC set holds the bytes read");
	if (tmp != MAP_FAILED)
		munmap(tmp, snapsize);
	ok(fails_with(fcntl(fd, F_SETOWN, getpid()), ENOTTY, "F_SETOWN"),
	    "fcntl F_SETOWN fails with ENOTTY");
	ok(flags != -1 && fcntl(fd, F_SETFL, flags) == 0 &&
	    fcntl(fd, F_GETFL) == flags, "fcntl F_SETFL clears both again");

	/* Other processes */
	ok(in_child(child_reads_inherited, &fd),
	    "a child reads the same bytes through the inherited descriptor "
	    "and the inherited mapping");
	ok(in_child(child_opens_too, NULL),
	    "a child opens the device itself and gets the same bytes");

	/* Consumers: lockstat's libelf reading, in a fresh open. */
	fileid = kldfind(MODULE_FILE);
	ok(fileid != -1, "kldfind(%s): file id %d", MODULE_FILE, fileid);
	ok(fails_with(fileid == -1 ? -1 : kldunload(fileid), EBUSY,
	    "kldunload"), "kldunload while open fails with EBUSY");

	close(fd);
	fd = open(DEVICE, O_RDONLY);
	ok(fd != -1, "after close, the same process opens again");
	if (fd != -1) {
		why[0] = '\0';
		ok(load_like_lockstat(fd, why, sizeof(why)),
		    "libelf reads the snapshot as lockstat does %s", why);
		check_symbol(0, KERNEL_SYMBOL);
		if (fileid != -1)
			check_symbol(fileid, MODULE_SYMBOL);
		close(fd);
	}

	/* The mapping outlives the descriptor. */
	if (map != MAP_FAILED) {
		ok(memcmp(map, snap, snapsize) == 0,
		    "an mmap(2) mapping stays valid after close(2)");
		munmap(map, snapsize);
	}

	printf("1..%d\n", tests);
	printf("# %d passed, %d failed\n", tests - failures, failures);
	return (failures == 0 ? 0 : 1);
}
