/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * ksyms_c.c: the benchmark's baseline, FreeBSD's C ksyms driver's snapshot
 * algorithm (sys/dev/ksyms/ksyms.c in 13.2 and 14.2), written anew for this
 * benchmark and run against the same simulated kernel services as the Rust
 * driver (benches/vs_c/vs_c.rs):
 *
 * - the size walk sums each file's table sizes (no pass over the symbols);
 * - the object is allocated, the header written with one object write;
 * - the copy walk copies each file's symbols in blocks of 256 into a buffer,
 *   adds the string base to st_name, asks LINKER_SYMBOL_VALUES only of modules
 *   (amd64's kernel needs no value fix-up), writes each block with one object
 *   write (uiomove_object), then the file's whole string table with one more.
 *
 * As in the driver, sh_info is the number of symbols (all counted as local)
 * and section indices are kept: the bytes differ from ours, the work is the
 * driver's. Never part of the kernel module: only the benchmark links it.
 */

#include <elf.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* What the kernel offers the driver, provided by the benchmark. */
struct kb_services {
	void	*ctx;
	/* linker_file_foreach(9): cb for each file, stops at a non-zero return. */
	int	(*foreach)(void *ctx, int (*cb)(void *lf, void *arg), void *arg);
	/* LINKER_SYMTAB_GET, LINKER_STRTAB_GET, lf->id. */
	long	(*symtab_get)(void *lf, const Elf64_Sym **symtab);
	long	(*strtab_get)(void *lf, const char **strtab);
	int	(*lf_id)(void *lf);
	/* LINKER_SYMBOL_VALUES: 0 and *value, or ENOENT. */
	int	(*symbol_values)(void *lf, const Elf64_Sym *sym, uint64_t *value);
	/* vm_pager_allocate of size bytes: 0 or ENOMEM. */
	int	(*object_alloc)(void *ctx, uint64_t size);
	/* uiomove_object of a UIO_SYSSPACE write: 0 or errno. */
	int	(*object_write)(void *ctx, const void *buf, uint64_t off,
		    size_t len);
	/* Bytes copied into the staging buffer (bcopy), for the report. */
	uint64_t staged;
};

int	kb_c_build(struct kb_services *k, uint64_t *size);

#define	SHDR_NULL	0
#define	SHDR_SYMTAB	1
#define	SHDR_STRTAB	2
#define	SHDR_SHSTRTAB	3
#define	SHDR_NUM	4

#define	STR_SYMTAB	".symtab"
#define	STR_STRTAB	".strtab"
#define	STR_SHSTRTAB	".shstrtab"

static const char ksyms_shstrtab[] =
	"\0" STR_SYMTAB "\0" STR_STRTAB "\0" STR_SHSTRTAB "\0";

struct ksyms_hdr {
	Elf64_Ehdr	kh_ehdr;
	Elf64_Phdr	kh_txtphdr;
	Elf64_Phdr	kh_datphdr;
	Elf64_Shdr	kh_shdr[SHDR_NUM];
	char		kh_shstrtab[sizeof(ksyms_shstrtab)];
};

struct tsizes {
	struct kb_services *ts_k;
	size_t		ts_symsz;
	size_t		ts_strsz;
};

struct toffsets {
	struct kb_services *to_k;
	uint64_t	to_symoff;
	uint64_t	to_stroff;
	unsigned	to_stridx;
	size_t		to_resid;
};

#define	SYMBLKSZ	(256 * sizeof(Elf64_Sym))

static int
ksyms_size_permod(void *lf, void *arg)
{
	struct tsizes *ts;
	const Elf64_Sym *symtab;
	const char *strtab;
	long syms;

	ts = arg;
	syms = ts->ts_k->symtab_get(lf, &symtab);
	ts->ts_symsz += syms * sizeof(Elf64_Sym);
	ts->ts_strsz += ts->ts_k->strtab_get(lf, &strtab);
	return (0);
}

static int
ksyms_add(void *lf, void *arg)
{
	struct toffsets *to;
	struct kb_services *k;
	const Elf64_Sym *symtab;
	Elf64_Sym *symp;
	const char *strtab;
	char *buf;
	size_t len, numsyms, strsz, symsz;
	uint64_t value;
	int error, i, nsyms;
	int fixup;

	to = arg;
	k = to->to_k;
	buf = malloc(SYMBLKSZ);
	if (buf == NULL)
		return (ENOMEM);
	numsyms = k->symtab_get(lf, &symtab);
	strsz = k->strtab_get(lf, &strtab);
	symsz = numsyms * sizeof(Elf64_Sym);
	fixup = k->lf_id(lf) > 1;

	while (symsz > 0) {
		len = symsz < SYMBLKSZ ? symsz : SYMBLKSZ;
		memcpy(buf, symtab, len);
		k->staged += len;
		symp = (Elf64_Sym *)buf;
		nsyms = len / sizeof(Elf64_Sym);
		for (i = 0; i < nsyms; i++) {
			symp[i].st_name += to->to_stridx;
			if (fixup && k->symbol_values(lf, &symtab[i],
			    &value) == 0)
				symp[i].st_value = value;
		}
		if (len > to->to_resid) {
			free(buf);
			return (ENXIO);
		}
		to->to_resid -= len;
		error = k->object_write(k->ctx, buf, to->to_symoff, len);
		to->to_symoff += len;
		if (error != 0) {
			free(buf);
			return (error);
		}
		symtab += nsyms;
		symsz -= len;
	}
	free(buf);

	if (strsz > to->to_resid)
		return (ENXIO);
	to->to_resid -= strsz;
	error = k->object_write(k->ctx, strtab, to->to_stroff, strsz);
	to->to_stroff += strsz;
	to->to_stridx += strsz;
	return (error);
}

static int
ksyms_snapshot(struct kb_services *k, struct tsizes *ts, uint64_t objsz)
{
	struct toffsets to;
	struct ksyms_hdr *hdr;
	int error;

	hdr = calloc(1, sizeof(*hdr));
	if (hdr == NULL)
		return (ENOMEM);
	hdr->kh_ehdr.e_ident[EI_MAG0] = ELFMAG0;
	hdr->kh_ehdr.e_ident[EI_MAG1] = ELFMAG1;
	hdr->kh_ehdr.e_ident[EI_MAG2] = ELFMAG2;
	hdr->kh_ehdr.e_ident[EI_MAG3] = ELFMAG3;
	hdr->kh_ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
	hdr->kh_ehdr.e_ident[EI_OSABI] = ELFOSABI_FREEBSD;
	hdr->kh_ehdr.e_ident[EI_CLASS] = ELFCLASS64;
	hdr->kh_ehdr.e_ident[EI_VERSION] = EV_CURRENT;
	hdr->kh_ehdr.e_type = ET_EXEC;
	hdr->kh_ehdr.e_machine = EM_X86_64;
	hdr->kh_ehdr.e_version = EV_CURRENT;
	hdr->kh_ehdr.e_phoff = offsetof(struct ksyms_hdr, kh_txtphdr);
	hdr->kh_ehdr.e_shoff = offsetof(struct ksyms_hdr, kh_shdr);
	hdr->kh_ehdr.e_ehsize = sizeof(Elf64_Ehdr);
	hdr->kh_ehdr.e_phentsize = sizeof(Elf64_Phdr);
	hdr->kh_ehdr.e_phnum = 2;
	hdr->kh_ehdr.e_shentsize = sizeof(Elf64_Shdr);
	hdr->kh_ehdr.e_shnum = SHDR_NUM;
	hdr->kh_ehdr.e_shstrndx = SHDR_SHSTRTAB;
	hdr->kh_txtphdr.p_type = PT_LOAD;
	hdr->kh_txtphdr.p_flags = PF_R | PF_X;
	hdr->kh_datphdr.p_type = PT_LOAD;
	hdr->kh_datphdr.p_flags = PF_R | PF_W | PF_X;
	hdr->kh_shdr[SHDR_SYMTAB].sh_name = 1;
	hdr->kh_shdr[SHDR_SYMTAB].sh_type = SHT_SYMTAB;
	hdr->kh_shdr[SHDR_SYMTAB].sh_offset = sizeof(*hdr);
	hdr->kh_shdr[SHDR_SYMTAB].sh_size = ts->ts_symsz;
	hdr->kh_shdr[SHDR_SYMTAB].sh_link = SHDR_STRTAB;
	hdr->kh_shdr[SHDR_SYMTAB].sh_info = ts->ts_symsz / sizeof(Elf64_Sym);
	hdr->kh_shdr[SHDR_SYMTAB].sh_addralign = sizeof(long);
	hdr->kh_shdr[SHDR_SYMTAB].sh_entsize = sizeof(Elf64_Sym);
	hdr->kh_shdr[SHDR_STRTAB].sh_name = 1 + sizeof(STR_SYMTAB);
	hdr->kh_shdr[SHDR_STRTAB].sh_type = SHT_STRTAB;
	hdr->kh_shdr[SHDR_STRTAB].sh_offset =
	    hdr->kh_shdr[SHDR_SYMTAB].sh_offset + ts->ts_symsz;
	hdr->kh_shdr[SHDR_STRTAB].sh_size = ts->ts_strsz;
	hdr->kh_shdr[SHDR_STRTAB].sh_addralign = sizeof(char);
	hdr->kh_shdr[SHDR_SHSTRTAB].sh_name = 1 + sizeof(STR_SYMTAB) +
	    sizeof(STR_STRTAB);
	hdr->kh_shdr[SHDR_SHSTRTAB].sh_type = SHT_STRTAB;
	hdr->kh_shdr[SHDR_SHSTRTAB].sh_offset =
	    offsetof(struct ksyms_hdr, kh_shstrtab);
	hdr->kh_shdr[SHDR_SHSTRTAB].sh_size = sizeof(ksyms_shstrtab);
	memcpy(hdr->kh_shstrtab, ksyms_shstrtab, sizeof(ksyms_shstrtab));

	to.to_k = k;
	to.to_symoff = hdr->kh_shdr[SHDR_SYMTAB].sh_offset;
	to.to_stroff = hdr->kh_shdr[SHDR_STRTAB].sh_offset;
	to.to_stridx = 0;
	to.to_resid = objsz - sizeof(struct ksyms_hdr);

	error = k->object_write(k->ctx, hdr, 0, sizeof(*hdr));
	free(hdr);
	if (error != 0)
		return (error);
	error = k->foreach(k->ctx, ksyms_add, &to);
	if (error != 0)
		return (error);
	if (to.to_resid != 0)
		return (ENXIO);
	return (0);
}

/*
 * What ksyms_open does to build a snapshot: up to 3 tries of size walk,
 * object, copy walk. Returns 0 and the size in *size, or an errno.
 */
int
kb_c_build(struct kb_services *k, uint64_t *size)
{
	struct tsizes ts;
	uint64_t elfsz;
	int error, try;

	error = ENXIO;
	for (try = 0; try < 3; try++) {
		ts.ts_k = k;
		ts.ts_symsz = 0;
		ts.ts_strsz = 0;
		(void)k->foreach(k->ctx, ksyms_size_permod, &ts);
		elfsz = sizeof(struct ksyms_hdr) + ts.ts_symsz + ts.ts_strsz;
		error = k->object_alloc(k->ctx, elfsz);
		if (error != 0)
			return (error);
		error = ksyms_snapshot(k, &ts, elfsz);
		if (error == 0) {
			*size = elfsz;
			break;
		}
	}
	return (error);
}
