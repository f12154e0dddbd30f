//! The machines whose snapshots the tool knows: what `check` expects and what
//! `build` writes for each.

use ksyms::elf::{ElfTarget, EM_AARCH64, EM_X86_64, FREEBSD_AMD64, FREEBSD_ARM64};
use std::fmt;

/// A FreeBSD architecture, named as `uname -m` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    #[value(alias = "x86_64")]
    Amd64,
    #[value(alias = "aarch64")]
    Arm64,
}

impl Machine {
    pub const ALL: [Machine; 2] = [Machine::Amd64, Machine::Arm64];

    /// The snapshot's ELF identity on this machine.
    pub fn target(self) -> &'static ElfTarget {
        match self {
            Machine::Amd64 => &FREEBSD_AMD64,
            Machine::Arm64 => &FREEBSD_ARM64,
        }
    }

    pub fn e_machine(self) -> u16 {
        self.target().machine
    }

    /// The `EM_` name of [`Machine::e_machine`].
    pub fn em_name(self) -> &'static str {
        match self {
            Machine::Amd64 => "EM_X86_64",
            Machine::Arm64 => "EM_AARCH64",
        }
    }

    pub fn from_e_machine(e_machine: u16) -> Option<Machine> {
        match e_machine {
            EM_X86_64 => Some(Machine::Amd64),
            EM_AARCH64 => Some(Machine::Arm64),
            _ => None,
        }
    }

    /// The machine this program runs on, if it is one of them.
    pub fn host() -> Option<Machine> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Machine::Amd64),
            "aarch64" => Some(Machine::Arm64),
            _ => None,
        }
    }

    /// Where the kernel's text starts (`build` places a position-independent
    /// "kernel" there): the architecture table of the main crate.
    pub fn kernel_base(self) -> u64 {
        self.target().kernel_base
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.target().name)
    }
}

#[cfg(test)]
mod tests {
    use super::Machine;

    #[test]
    fn numbers_are_the_elf_specifications() {
        // From elf(5) / sys/elf_common.h, not from the crate.
        assert_eq!(Machine::Amd64.e_machine(), 62);
        assert_eq!(Machine::Arm64.e_machine(), 183);
        for m in Machine::ALL {
            assert_eq!(Machine::from_e_machine(m.e_machine()), Some(m));
        }
        assert_eq!(Machine::from_e_machine(3), None);
    }
}
