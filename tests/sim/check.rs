//! What a snapshot must be: the engine's bytes for the same files (src/snapshot.rs),
//! and an independent reading (the `object` crate) compared with the inputs.

use super::files::{AsFile, EngineFile, SHN_ABS, SHN_UNDEF, STB_LOCAL};
use ksyms::snapshot::{self, SliceSink};

/// The bytes the engine produces for `files` (in order; the first is the kernel).
pub fn engine_bytes<F: AsFile>(files: &[F]) -> Vec<u8> {
    let view: Vec<EngineFile<'_>> = files.iter().map(|f| EngineFile(f.file())).collect();
    let census = snapshot::census(&view).expect("census of the simulated files");
    let layout = census.layout().expect("layout");
    let mut buf = vec![0u8; layout.size() as usize];
    // Small pages, unlike the device's: the bytes must not depend on the page size.
    snapshot::write(
        &view,
        layout,
        &ksyms::elf::FREEBSD_AMD64,
        &mut SliceSink::with_page_size(&mut buf, 64),
    )
    .expect("engine write");
    buf
}

/// One symbol as a consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub name: Vec<u8>,
    pub value: u64,
    pub size: u64,
    pub info: u8,
    pub other: u8,
    pub shndx: u16,
}

/// Reads a snapshot with the `object` crate: every symbol of its SHT_SYMTAB with
/// the name from the section its sh_link names; plus sh_info.
pub fn read_symbols(bytes: &[u8]) -> Result<(Vec<Seen>, u32), String> {
    use object::read::elf::{FileHeader, SectionHeader, Sym};
    use object::LittleEndian as LE;
    let hdr = object::elf::FileHeader64::<LE>::parse(bytes).map_err(|e| e.to_string())?;
    let endian = LE;
    let sections = hdr.sections(endian, bytes).map_err(|e| e.to_string())?;
    let symtab = sections
        .iter()
        .find(|s| s.sh_type(endian) == object::elf::SHT_SYMTAB)
        .ok_or("no SHT_SYMTAB section")?;
    let table = sections
        .symbols(endian, bytes, object::elf::SHT_SYMTAB)
        .map_err(|e| e.to_string())?;
    let strings = table.strings();
    let mut out = Vec::new();
    for sym in table.symbols() {
        let name = strings
            .get(sym.st_name(endian))
            .map_err(|_| format!("bad st_name {}", sym.st_name(endian)))?;
        out.push(Seen {
            name: name.to_vec(),
            value: sym.st_value(endian),
            size: sym.st_size(endian),
            info: sym.st_info(),
            other: sym.st_other(),
            shndx: sym.st_shndx(endian),
        });
    }
    Ok((out, symtab.sh_info(endian)))
}

/// Every input symbol as a snapshot of `files` must hold it: its own name, the address
/// the linker reports (or its own value), SHN_ABS or SHN_UNDEF; with the st_name it
/// must have there (its own, rebased by the string bytes of the files before it).
pub fn expected<F: AsFile>(files: &[F]) -> Vec<(u32, Seen)> {
    let mut want = Vec::new();
    let mut base = 0u64;
    for f in files {
        let f = f.file();
        for (i, s) in f.syms.iter().enumerate() {
            let seen = Seen {
                name: f.name(i).expect("input name").to_vec(),
                value: f.expected_value(i),
                size: s.st_size,
                info: s.st_info,
                other: s.st_other,
                shndx: if s.st_shndx == SHN_UNDEF {
                    SHN_UNDEF
                } else {
                    SHN_ABS
                },
            };
            want.push(((base + u64::from(s.st_name)) as u32, seen));
        }
        base += f.strs.len() as u64;
    }
    want
}

/// Checks a snapshot against its inputs without the engine: every input symbol once
/// as [`expected`] says; locals first with sh_info right after them; entry 0 null.
pub fn verify<F: AsFile>(files: &[F], bytes: &[u8]) {
    let (got, sh_info) = read_symbols(bytes).expect("the snapshot parses as ELF");
    let want: Vec<Seen> = expected(files).into_iter().map(|(_, s)| s).collect();
    let locals = want.iter().filter(|s| s.info >> 4 == STB_LOCAL).count();
    assert_eq!(
        sh_info as usize, locals,
        "sh_info is not the number of locals"
    );
    for (i, s) in got.iter().enumerate() {
        assert_eq!(
            s.info >> 4 == STB_LOCAL,
            i < locals,
            "symbol {i} on the wrong side of sh_info"
        );
    }
    if let Some(first) = got.first() {
        assert_eq!(
            (
                first.value,
                first.size,
                first.info,
                first.shndx,
                first.name.len()
            ),
            (0, 0, 0, 0, 0),
            "entry 0 is not the null symbol"
        );
    }
    assert_same_symbols(got, want);
}

/// Fails, showing the first difference, unless `got` and `want` hold the same symbols
/// as multisets (in any order).
pub fn assert_same_symbols<T: Ord + std::fmt::Debug>(mut got: Vec<T>, mut want: Vec<T>) {
    got.sort();
    want.sort();
    if got != want {
        let diff = got
            .iter()
            .zip(&want)
            .find(|(g, w)| g != w)
            .map(|(g, w)| format!("got  {g:?}\nwant {w:?}"))
            .unwrap_or_default();
        panic!(
            "snapshot symbols differ from the inputs ({} got, {} wanted); first difference:\n{diff}",
            got.len(),
            want.len()
        );
    }
}

/// Both checks: the exact engine bytes, and the independent reading.
pub fn assert_snapshot<F: AsFile>(files: &[F], bytes: &[u8]) {
    let want = engine_bytes(files);
    assert_eq!(bytes.len(), want.len(), "snapshot size");
    if bytes != want.as_slice() {
        let at = bytes.iter().zip(&want).position(|(a, b)| a != b).unwrap();
        panic!("snapshot bytes differ from the engine's at offset {at}");
    }
    verify(files, bytes);
}

/// Which of several candidate file sets a snapshot is exactly (by engine bytes).
pub fn which_set<F: AsFile>(sets: &[Vec<F>], bytes: &[u8]) -> Option<usize> {
    sets.iter().position(|s| engine_bytes(s) == bytes)
}
