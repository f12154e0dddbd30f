//! The names kmod/ksyms_kpi.h declares: the shim's `kpi_*` services and Rust's
//! `ksyms_rs_*` entry points.

use std::path::Path;

use crate::Failure;

/// The kpi header, relative to the repository.
pub const PATH: &str = "kmod/ksyms_kpi.h";

#[derive(Debug, Default)]
pub struct Header {
    /// Functions the shim provides (`kpi_*`).
    pub services: Vec<String>,
    /// Functions the Rust half must define (`ksyms_rs_*`).
    pub entry_points: Vec<String>,
}

impl Header {
    pub fn read(root: &Path) -> Result<Header, Failure> {
        let path = root.join(PATH);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
        Ok(Header::parse(&text))
    }

    /// Every `kpi_NAME(` and `ksyms_rs_NAME(` outside typedef lines: the declared
    /// functions (a typedef names a function type, not a function).
    pub fn parse(text: &str) -> Header {
        let mut header = Header::default();
        for line in text
            .lines()
            .filter(|l| !l.trim_start().starts_with("typedef"))
        {
            for (prefix, list) in [
                ("kpi_", &mut header.services),
                ("ksyms_rs_", &mut header.entry_points),
            ] {
                let mut rest = line;
                while let Some(at) = rest.find(prefix) {
                    let word_start = at == 0
                        || !rest[..at]
                            .chars()
                            .next_back()
                            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                    let tail = &rest[at..];
                    let len = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len());
                    if word_start && tail[len..].starts_with('(') {
                        list.push(tail[..len].to_string());
                    }
                    rest = &tail[len..];
                }
            }
        }
        header.services.sort();
        header.services.dedup();
        header.entry_points.sort();
        header.entry_points.dedup();
        header
    }
}

#[cfg(test)]
mod tests {
    use super::Header;

    #[test]
    fn declarations_not_typedefs_or_mentions() {
        let h = Header::parse(
            "typedef int kpi_linker_cb(struct linker_file *lf, void *ctx);\n\
             int\tkpi_linker_foreach(kpi_linker_cb *cb, void *ctx);\n\
             /* see kpi_lock */ void kpi_lock(void);\n\
             int\t ksyms_rs_open(int fflags);\nint my_kpi_x(void);\n",
        );
        assert_eq!(h.services, ["kpi_linker_foreach", "kpi_lock"]);
        assert_eq!(h.entry_points, ["ksyms_rs_open"]);
    }
}
