//! The precision of the native engine's matrix multiplies, as the CLI's
//! `--precision` names it. Whether this CPU can run bf16 is the engine's
//! to say (`Precision::runs_bf16`, in `native`).

/// Precision of the engine's matrix multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// Matrix-multiply inputs rounded to bf16 on the CPU's AMX tiles or
    /// AVX512-BF16 dot products, f32 accumulation, f32 master weights,
    /// optimizer state and everything else. Where the CPU has neither the
    /// multiplies run in f32 instead.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision \"{other}\" (use fp32 or bf16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}
