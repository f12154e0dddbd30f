/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * lockstat_reader: reads a ksyms snapshot the way FreeBSD's lockstat(1) reads
 * /dev/ksyms (cddl/contrib/opensolaris/cmd/lockstat/sym.c), so that the tests
 * can check that lockstat's code works unchanged on the snapshot:
 *
 *  - libelf: elf_version(EV_CURRENT), elf_begin(ELF_C_READ), a walk of the
 *    sections with elf_nextscn() and gelf_getshdr() to find the SHT_SYMTAB
 *    section, elf_getdata() on it, then a second walk that counts sections to
 *    find the one named by its sh_link, and elf_getdata() on that;
 *  - the symbol records are used in place (d_buf as an array of Elf64_Sym);
 *  - symbols of type NOTYPE, OBJECT or FUNC with a non-zero size are kept;
 *  - lockstat's fake "cpu[N]" symbols and its ULONG_MAX sentinel are added;
 *  - sort by value, drop all but one symbol of each value, sort again, skip
 *    the dropped ones and turn the first entry into "(usermode)";
 *  - addresses are looked up by binary search and printed as name+0xoffset.
 *
 * Usage: lockstat_reader FILE
 * Prints "kept N" (symbols that passed the filter), then reads one hexadecimal
 * address per line on standard input and prints "ADDR NAME+0xOFF" for each.
 * Exits 1 with a message on standard error when the file cannot be read.
 */

#include <sys/types.h>

#include <err.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct entry {
	uintptr_t	 addr;
	const char	*name;
	size_t		 size;
};

static struct entry *table;
static int ntable, maxtable;
static char maxname[64];

static void
add(const char *name, uintptr_t addr, size_t size)
{
	struct entry *e;

	if (ntable >= maxtable) {
		maxtable += 10000;
		table = realloc(table, maxtable * sizeof(*table));
		if (table == NULL)
			err(1, "realloc");
	}
	e = &table[ntable++];
	e->name = name;
	e->addr = addr;
	e->size = size;
}

static int
by_addr(const void *a, const void *b)
{
	uintptr_t x = ((const struct entry *)a)->addr;
	uintptr_t y = ((const struct entry *)b)->addr;

	if (x < y)
		return (-1);
	if (x > y)
		return (1);
	return (0);
}

/* Returns the number of symbols that passed lockstat's filter. */
static int
load(const char *path)
{
	Elf *elf;
	Elf_Scn *scn;
	Elf_Data *data;
	GElf_Shdr shdr;
	Elf64_Sym *symtab, *sym, *last;
	const char *strtab;
	size_t strsize;
	unsigned int cnt;
	int fd, i, kept, nsyms;
	long strindex;
	char *name;

	if ((fd = open(path, O_RDONLY)) == -1)
		err(1, "%s", path);
	(void)elf_version(EV_CURRENT);
	if ((elf = elf_begin(fd, ELF_C_READ, NULL)) == NULL)
		errx(1, "elf_begin: %s", elf_errmsg(-1));

	symtab = NULL;
	strtab = NULL;
	strsize = 0;
	nsyms = 0;
	strindex = -1;
	scn = NULL;
	for (cnt = 1; (scn = elf_nextscn(elf, scn)) != NULL; cnt++) {
		if (gelf_getshdr(scn, &shdr) == NULL)
			errx(1, "gelf_getshdr: %s", elf_errmsg(-1));
		if (shdr.sh_type == SHT_SYMTAB) {
			if ((data = elf_getdata(scn, NULL)) == NULL)
				errx(1, "elf_getdata(symtab): %s", elf_errmsg(-1));
			if (shdr.sh_entsize != sizeof(Elf64_Sym))
				errx(1, "sh_entsize %ju", (uintmax_t)shdr.sh_entsize);
			symtab = data->d_buf;
			nsyms = shdr.sh_size / shdr.sh_entsize;
			strindex = shdr.sh_link;
		}
	}
	if (symtab == NULL)
		errx(1, "no SHT_SYMTAB section");

	/* scn is NULL again: walk from the first section, counting. */
	for (cnt = 1; (scn = elf_nextscn(elf, scn)) != NULL; cnt++) {
		if (cnt == strindex) {
			if ((data = elf_getdata(scn, NULL)) == NULL)
				errx(1, "elf_getdata(strtab): %s", elf_errmsg(-1));
			strtab = data->d_buf;
			strsize = data->d_size;
		}
	}
	if (strtab == NULL)
		errx(1, "no section %ld for sh_link", strindex);

	kept = 0;
	last = symtab + nsyms;
	for (sym = symtab; sym < last; sym++) {
		if (GELF_ST_TYPE(sym->st_info) <= STT_FUNC &&
		    sym->st_size != 0) {
			/* lockstat trusts st_name; the test wants to know. */
			if (sym->st_name >= strsize)
				errx(1, "st_name %u past the string table",
				    sym->st_name);
			add(strtab + sym->st_name, (uintptr_t)sym->st_value,
			    (size_t)sym->st_size);
			kept++;
		}
	}

	/* lockstat's fake per-CPU symbols, "good for up to 256 CPUs". */
	for (i = 0; i < 256; i++) {
		if ((name = malloc(20)) == NULL)
			err(1, "malloc");
		(void)snprintf(name, 20, "cpu[%d]", i);
		add(name, 0x01000000 + ((uintptr_t)i << 16), sizeof(uintptr_t));
	}
	(void)snprintf(maxname, sizeof(maxname), "0x%lx", ULONG_MAX);
	add(maxname, ULONG_MAX, 1);

	qsort(table, ntable, sizeof(*table), by_addr);
	for (i = 0; i < ntable - 1; i++)
		if (table[i].addr == table[i + 1].addr)
			table[i].addr = 0;
	qsort(table, ntable, sizeof(*table), by_addr);
	while (table[1].addr == 0) {
		table++;
		ntable--;
	}
	table[0].name = "(usermode)";
	table[0].addr = 0;
	table[0].size = 1;

	/* The tables stay mapped: elf and fd are kept open, as names point in. */
	return (kept);
}

static const char *
lookup(uintptr_t addr, uintptr_t *offset)
{
	int lo, hi, mid;

	lo = 0;
	hi = ntable - 1;
	while (hi - lo > 1) {
		mid = (lo + hi) / 2;
		if (addr >= table[mid].addr)
			lo = mid;
		else
			hi = mid;
	}
	*offset = addr - table[lo].addr;
	return (table[lo].name);
}

int
main(int argc, char **argv)
{
	char line[128];
	uintptr_t addr, off;
	const char *name;
	char *end;

	if (argc != 2) {
		fprintf(stderr, "usage: lockstat_reader FILE < addresses\n");
		return (2);
	}
	printf("kept %d\n", load(argv[1]));
	while (fgets(line, sizeof(line), stdin) != NULL) {
		addr = strtoul(line, &end, 16);
		if (end == line)
			continue;
		name = lookup(addr, &off);
		printf("%lx %s+0x%lx\n", (unsigned long)addr, name,
		    (unsigned long)off);
	}
	return (0);
}
