//! ELF-64 types and constants, as much of them as a symbol-table snapshot needs.
//!
//! The layouts are those of `sys/elf64.h`; sizes and field offsets are checked at
//! compile time. Everything the snapshot says about the machine it describes (class,
//! byte order, machine, OS ABI) lives in [`ElfTarget`], so another architecture is
//! one more table entry.

use bitflags::bitflags;
use memoffset::offset_of;
use static_assertions::const_assert_eq;

/// `e_ident` indices and values.
pub const EI_NIDENT: usize = 16;
pub const ELFMAG: [u8; 4] = [0x7f, b'E', b'L', b'F'];
pub const EI_CLASS: usize = 4;
pub const EI_DATA: usize = 5;
pub const EI_VERSION: usize = 6;
pub const EI_OSABI: usize = 7;
pub const EI_ABIVERSION: usize = 8;
pub const ELFCLASS64: u8 = 2;
pub const ELFDATA2LSB: u8 = 1;
pub const EV_CURRENT: u8 = 1;
pub const ELFOSABI_FREEBSD: u8 = 9;

pub const ET_EXEC: u16 = 2;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

pub const PT_LOAD: u32 = 1;

pub const SHT_NULL: u32 = 0;
pub const SHT_SYMTAB: u32 = 2;
pub const SHT_STRTAB: u32 = 3;

/// Reserved section indices.
pub const SHN_UNDEF: u16 = 0;
pub const SHN_LORESERVE: u16 = 0xff00;
pub const SHN_ABS: u16 = 0xfff1;
pub const SHN_COMMON: u16 = 0xfff2;
pub const SHN_XINDEX: u16 = 0xffff;

/// Symbol bindings (`ELF64_ST_BIND`).
pub const STB_LOCAL: u8 = 0;
pub const STB_GLOBAL: u8 = 1;
pub const STB_WEAK: u8 = 2;

/// Symbol types (`ELF64_ST_TYPE`).
pub const STT_NOTYPE: u8 = 0;
pub const STT_OBJECT: u8 = 1;
pub const STT_FUNC: u8 = 2;
pub const STT_SECTION: u8 = 3;
pub const STT_FILE: u8 = 4;
pub const STT_GNU_IFUNC: u8 = 10;

bitflags! {
    /// Program header permissions (`p_flags`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SegmentFlags: u32 {
        const X = 0x1;
        const W = 0x2;
        const R = 0x4;
    }
}

/// What differs between the architectures the module runs on, one entry each: what
/// a snapshot says about the machine whose symbols it holds, and the kernel facts
/// the device, the tool and the tests need. A further architecture (riscv64) is
/// one more entry (i386 would also need the ELF-32 record types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfTarget {
    /// FreeBSD's name for it, as `uname -m` prints it.
    pub name: &'static str,
    pub class: u8,
    pub data: u8,
    pub osabi: u8,
    pub machine: u16,
    /// PAGE_SIZE: the unit of mmap(2) bounds and of the snapshot's VM object.
    pub page_size: u64,
    /// Where the kernel's text starts (the tool's `build` places a
    /// position-independent "kernel" there).
    pub kernel_base: u64,
}

/// FreeBSD/amd64: 4 KiB pages; the kernel linked at KERNBASE + 2 MiB
/// (sys/conf/ldscript.amd64, `kernbase + kernload`; sys/amd64/include/vmparam.h).
pub const FREEBSD_AMD64: ElfTarget = ElfTarget {
    name: "amd64",
    class: ELFCLASS64,
    data: ELFDATA2LSB,
    osabi: ELFOSABI_FREEBSD,
    machine: EM_X86_64,
    page_size: 4096,
    kernel_base: 0xffff_ffff_8020_0000,
};

/// FreeBSD/arm64: ELF-64 little-endian like amd64, EM_AARCH64; 4 KiB pages
/// (sys/arm64/include/param.h); the kernel linked at KERNBASE, 0xffff000000000000
/// (sys/conf/Makefile.arm64, sys/arm64/include/vmparam.h).
pub const FREEBSD_ARM64: ElfTarget = ElfTarget {
    name: "arm64",
    machine: EM_AARCH64,
    kernel_base: 0xffff_0000_0000_0000,
    ..FREEBSD_AMD64
};

/// Every architecture the module is built for.
pub const TARGETS: [&ElfTarget; 2] = [&FREEBSD_AMD64, &FREEBSD_ARM64];

/// The architecture this crate is compiled for: in ksyms.ko, the running kernel's.
pub const NATIVE: &ElfTarget = if cfg!(target_arch = "aarch64") {
    &FREEBSD_ARM64
} else {
    &FREEBSD_AMD64
};

/// The ELF file header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elf64Ehdr {
    pub e_ident: [u8; EI_NIDENT],
    pub e_type: u16,
    pub e_machine: u16,
    pub e_version: u32,
    pub e_entry: u64,
    pub e_phoff: u64,
    pub e_shoff: u64,
    pub e_flags: u32,
    pub e_ehsize: u16,
    pub e_phentsize: u16,
    pub e_phnum: u16,
    pub e_shentsize: u16,
    pub e_shnum: u16,
    pub e_shstrndx: u16,
}

/// A program header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elf64Phdr {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_paddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
    pub p_align: u64,
}

/// A section header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elf64Shdr {
    pub sh_name: u32,
    pub sh_type: u32,
    pub sh_flags: u64,
    pub sh_addr: u64,
    pub sh_offset: u64,
    pub sh_size: u64,
    pub sh_link: u32,
    pub sh_info: u32,
    pub sh_addralign: u64,
    pub sh_entsize: u64,
}

/// A symbol-table entry, as the kernel linker keeps it (`Elf64_Sym`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elf64Sym {
    pub st_name: u32,
    pub st_info: u8,
    pub st_other: u8,
    pub st_shndx: u16,
    pub st_value: u64,
    pub st_size: u64,
}

impl Elf64Sym {
    /// `ELF64_ST_BIND`.
    pub const fn binding(&self) -> u8 {
        self.st_info >> 4
    }

    /// `ELF64_ST_TYPE`.
    pub const fn kind(&self) -> u8 {
        self.st_info & 0xf
    }

    /// Whether the symbol belongs before `sh_info` in a symbol table.
    pub const fn is_local(&self) -> bool {
        self.binding() == STB_LOCAL
    }

    /// `ELF64_ST_INFO`.
    pub const fn info(binding: u8, kind: u8) -> u8 {
        (binding << 4) | (kind & 0xf)
    }
}

// The records are written to the snapshot as their in-memory bytes: they must have
// exactly the ELF sizes, with no padding anywhere.
const_assert_eq!(core::mem::size_of::<Elf64Ehdr>(), 64);
const_assert_eq!(core::mem::size_of::<Elf64Phdr>(), 56);
const_assert_eq!(core::mem::size_of::<Elf64Shdr>(), 64);
const_assert_eq!(core::mem::size_of::<Elf64Sym>(), 24);
const_assert_eq!(core::mem::align_of::<Elf64Sym>(), 8);

const _: () = {
    assert!(offset_of!(Elf64Ehdr, e_type) == 16);
    assert!(offset_of!(Elf64Ehdr, e_entry) == 24);
    assert!(offset_of!(Elf64Ehdr, e_phoff) == 32);
    assert!(offset_of!(Elf64Ehdr, e_shoff) == 40);
    assert!(offset_of!(Elf64Ehdr, e_flags) == 48);
    assert!(offset_of!(Elf64Ehdr, e_ehsize) == 52);
    assert!(offset_of!(Elf64Ehdr, e_shstrndx) == 62);
    assert!(offset_of!(Elf64Phdr, p_offset) == 8);
    assert!(offset_of!(Elf64Phdr, p_align) == 48);
    assert!(offset_of!(Elf64Shdr, sh_flags) == 8);
    assert!(offset_of!(Elf64Shdr, sh_offset) == 24);
    assert!(offset_of!(Elf64Shdr, sh_link) == 40);
    assert!(offset_of!(Elf64Shdr, sh_info) == 44);
    assert!(offset_of!(Elf64Shdr, sh_entsize) == 56);
    assert!(offset_of!(Elf64Sym, st_info) == 4);
    assert!(offset_of!(Elf64Sym, st_shndx) == 6);
    assert!(offset_of!(Elf64Sym, st_value) == 8);
    assert!(offset_of!(Elf64Sym, st_size) == 16);
};

/// Plain-old-data records whose bytes can be written out as they are.
///
/// # Safety
/// Implementors are `#[repr(C)]`, have no padding bytes and no invalid bit
/// patterns (the size assertions above check the first two for the ELF types).
pub unsafe trait Pod: Copy {}

// SAFETY: all four are repr(C) records of integers whose sizes, asserted above,
// equal the sum of their fields: no padding, every bit pattern valid.
unsafe impl Pod for Elf64Ehdr {}
// SAFETY: as above.
unsafe impl Pod for Elf64Phdr {}
// SAFETY: as above.
unsafe impl Pod for Elf64Shdr {}
// SAFETY: as above.
unsafe impl Pod for Elf64Sym {}

// SAFETY: an array of Pod records has no padding between them and no invalid bits.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// The bytes of a slice of records, in the machine's byte order (the snapshot's,
/// since a snapshot describes the kernel it is built in).
pub fn as_bytes<T: Pod>(records: &[T]) -> &[u8] {
    // SAFETY: T is Pod (no padding, so every byte is initialised); the length is the
    // slice's own size in bytes, which cannot overflow since the slice exists; u8
    // has alignment 1; the lifetime is tied to `records`.
    unsafe {
        core::slice::from_raw_parts(
            records.as_ptr().cast::<u8>(),
            core::mem::size_of_val(records),
        )
    }
}
