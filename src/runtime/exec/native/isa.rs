//! Which instruction set the engine's kernels use: the best this CPU has
//! (AMX -> AVX512-BF16 -> AVX-512 -> AVX2 + FMA -> portable), capped by the
//! environment variable `PLEC_ISA` (`portable`, `avx2`, `avx512`,
//! `avx512bf16` or `amx`), so one
//! machine can run and compare every path it supports. The CLI calls
//! [`init`] before any work, so a bad `PLEC_ISA` is an error the user sees.

use std::sync::OnceLock;

use super::gemm::frame::Kernel;

/// An instruction-set level, ordered: each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// No vector kernels of our own: the `gemm` crate and scalar loops.
    Portable,
    /// AVX2 + FMA (256-bit).
    Avx2,
    /// AVX-512F (512-bit).
    Avx512,
    /// AVX-512 plus AVX512-BF16 dot products (bf16 multiplies without AMX: AMD Zen 4/5,
    /// Intel Cooper Lake).
    Avx512Bf16,
    /// AVX-512 plus AMX-BF16 tiles (bf16 multiplies; every AMX CPU also has AVX512-BF16).
    Amx,
}

/// The kernel `--precision bf16` multiplies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bf16Kernel {
    /// AMX tiles (`gemm::amx`).
    Amx,
    /// `vdpbf16ps` in the GEMM frame (`gemm::avx512bf16`).
    Avx512Bf16,
}

impl Isa {
    /// Every level, lowest first.
    pub(crate) const ALL: [Isa; 5] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];

    /// The name `PLEC_ISA` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    fn parse(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The best level this CPU (and OS) supports.
    pub(crate) fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if super::gemm::amx::available() {
                    return Isa::Amx;
                }
                if super::gemm::avx512bf16::available() {
                    return Isa::Avx512Bf16;
                }
                if Kernel::Avx512.available() {
                    return Isa::Avx512;
                }
                if Kernel::Avx2.available() {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// The f32 GEMM micro-kernel this level runs (`None`: the `gemm` crate).
    pub(crate) fn f32_kernel(self) -> Option<Kernel> {
        match self {
            Isa::Amx | Isa::Avx512Bf16 | Isa::Avx512 => Some(Kernel::Avx512),
            Isa::Avx2 => Some(Kernel::Avx2),
            Isa::Portable => None,
        }
    }

    /// The kernel bf16 multiplies run on at this level (`None`: bf16 runs in f32). AMX
    /// needs the process's tile permission as well (`gemm::amx::available`).
    pub(crate) fn bf16_kernel(self) -> Option<Bf16Kernel> {
        match self {
            Isa::Amx if super::gemm::amx::available() => Some(Bf16Kernel::Amx),
            Isa::Amx | Isa::Avx512Bf16 => Some(Bf16Kernel::Avx512Bf16),
            Isa::Avx512 | Isa::Avx2 | Isa::Portable => None,
        }
    }

    /// What the engine's bf16 multiplies run on at this level, for logs and metrics.
    pub(crate) fn bf16_kernel_name(self) -> &'static str {
        match self.bf16_kernel() {
            Some(Bf16Kernel::Amx) => "plec amx 32x32 tiles",
            Some(Bf16Kernel::Avx512Bf16) => "plec avx512-bf16 14x32",
            None => "none (bf16 runs in fp32)",
        }
    }

    /// What the engine's f32 multiplies run on at this level, for logs and metrics.
    pub(crate) fn f32_kernel_name(self) -> &'static str {
        match self.f32_kernel() {
            Some(Kernel::Avx512) => "plec avx512 14x32",
            Some(Kernel::Avx2) => "plec avx2+fma 6x16",
            None => "gemm crate (portable)",
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static CHOSEN: OnceLock<Isa> = OnceLock::new();

/// The level `PLEC_ISA` (when set) asks for, checked against the CPU.
fn from_env() -> Result<Isa, String> {
    let have = Isa::detected();
    let asked = match std::env::var("PLEC_ISA") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => return Ok(have),
    };
    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
    let want = Isa::parse(&asked).ok_or_else(|| {
        format!(
            "PLEC_ISA=\"{asked}\" is not an instruction set plec knows (use one of {})",
            names.join(", ")
        )
    })?;
    if want > have {
        return Err(format!(
            "PLEC_ISA={want} asks for more than this CPU has: {} supports up to {have}",
            cpu_model()
        ));
    }
    Ok(want)
}

/// Fixes the level for this process from `PLEC_ISA` and the CPU; the error says what is wrong
/// with `PLEC_ISA`. Later calls return the level fixed first.
pub(crate) fn init() -> Result<Isa, String> {
    if let Some(&isa) = CHOSEN.get() {
        return Ok(isa);
    }
    let isa = from_env()?;
    Ok(*CHOSEN.get_or_init(|| isa))
}

#[cfg(test)]
thread_local! {
    /// Tests set it to run a lower level's path on this thread.
    static FORCED: std::cell::Cell<Option<Isa>> = const { std::cell::Cell::new(None) };
}

/// Runs the engine on this thread at level `isa` (`None`: the chosen one; tests only).
#[cfg(test)]
pub(crate) fn set_forced(isa: Option<Isa>) {
    FORCED.with(|c| c.set(isa));
}

/// The levels with distinct f32 GEMM paths that this CPU runs (portable, AVX2, AVX-512),
/// naming on stderr the ones it skips (tests only).
#[cfg(test)]
pub(crate) fn testable_f32_levels() -> Vec<Isa> {
    let have = Isa::detected();
    let mut out = Vec::new();
    for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
        if isa <= have {
            out.push(isa);
        } else {
            eprintln!("skipped: the {isa} f32 kernel (this CPU supports up to {have})");
        }
    }
    out
}

/// The level in use: [`init`]'s, or (when nothing called it, as in library use) the CPU's
/// best capped by a valid `PLEC_ISA`.
pub(crate) fn chosen() -> Isa {
    #[cfg(test)]
    if let Some(isa) = FORCED.with(|c| c.get()) {
        return isa;
    }
    *CHOSEN.get_or_init(|| from_env().unwrap_or_else(|_| Isa::detected()))
}

/// The CPU's model name (CPUID's brand string on x86-64, else /proc/cpuinfo), for logs and
/// metrics.
pub(crate) fn cpu_model() -> String {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if let Some(s) = brand_string() {
                return s;
            }
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
        })
        .clone()
}

#[cfg(target_arch = "x86_64")]
fn brand_string() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    // SAFETY: cpuid exists on every x86-64 CPU (the call is safe on newer toolchains).
    #[allow(unused_unsafe)]
    let max = unsafe { __cpuid(0x8000_0000) }.eax;
    if max < 0x8000_0004 {
        return None;
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002u32..=0x8000_0004 {
        // SAFETY: as above; the leaf is at most the maximum extended leaf.
        #[allow(unused_unsafe)]
        let r = unsafe { __cpuid(leaf) };
        for w in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
    }
    let s = String::from_utf8_lossy(&bytes)
        .trim_matches(char::from(0))
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// What this CPU offers and what the engine uses, in one line.
pub(crate) fn describe() -> String {
    let isa = chosen();
    let have = Isa::detected();
    let cap = if isa < have {
        format!(" (capped by PLEC_ISA; the CPU has {have})")
    } else {
        String::new()
    };
    format!(
        "cpu {}: isa {isa}{cap}, f32 gemm {}, bf16 gemm {}",
        cpu_model(),
        isa.f32_kernel_name(),
        isa.bf16_kernel_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order() {
        for i in Isa::ALL {
            assert_eq!(Isa::parse(i.name()), Some(i));
            assert_eq!(Isa::parse(&i.name().to_uppercase()), Some(i));
        }
        assert_eq!(Isa::parse("sse"), None);
        assert!(Isa::Portable < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        assert!(Isa::Avx512 < Isa::Avx512Bf16 && Isa::Avx512Bf16 < Isa::Amx);
        assert!(!cpu_model().is_empty());
    }
}
