//! Which executor runs a model on the CPU: the native engine, candle, or
//! (the default) the native engine with candle only for plans it cannot
//! run, announced once on stderr with the op and the cost.
//!
//! Process-wide like the thread counts and the precision: the CLI sets it
//! from `--engine` before any model is built; `PLEC_ENGINE` is read when
//! nothing was set.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The user's choice of executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// The native engine; candle, with a notice, where it refuses an op.
    #[default]
    Auto,
    /// The native engine or an error (`Unsupported`) naming the op.
    Native,
    /// Always candle.
    Candle,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(EngineChoice::Auto),
            "native" => Ok(EngineChoice::Native),
            "candle" => Ok(EngineChoice::Candle),
            other => Err(format!(
                "unknown engine \"{other}\" (use auto, native or candle)"
            )),
        }
    }
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Native => "native",
            EngineChoice::Candle => "candle",
        })
    }
}

/// 0: not set (read `PLEC_ENGINE`), else 1 + the choice's index.
static CHOICE: AtomicU8 = AtomicU8::new(0);
/// Whether the fallback notice was printed already.
static NOTICE_SHOWN: AtomicBool = AtomicBool::new(false);

/// Sets the executor of models built from now on.
pub fn set_engine_choice(c: EngineChoice) {
    let v = match c {
        EngineChoice::Auto => 1,
        EngineChoice::Native => 2,
        EngineChoice::Candle => 3,
    };
    CHOICE.store(v, Ordering::Relaxed);
}

/// The executor asked for: what `set_engine_choice` set, else
/// `PLEC_ENGINE` (`native`, `candle`), else `Auto`. A `PLEC_ENGINE` value
/// that names no engine counts as `Auto`: the CLI validates its flag, and
/// the variable is a testing aid.
pub(crate) fn engine_choice() -> EngineChoice {
    match CHOICE.load(Ordering::Relaxed) {
        1 => EngineChoice::Auto,
        2 => EngineChoice::Native,
        3 => EngineChoice::Candle,
        _ => std::env::var("PLEC_ENGINE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
    }
}

/// The one-line notice for a plan that falls back to candle.
pub(crate) fn fallback_notice(op: &str, why: &str) -> String {
    format!(
        "note: op \"{op}\" runs on the slower candle path ({why}); the whole model trains there, \
         several times slower than on the native engine (`--engine native` makes this an error)"
    )
}

/// Prints `notice` on stderr, the first time only in this process.
pub(crate) fn announce_once(notice: &str) {
    if !NOTICE_SHOWN.swap(true, Ordering::Relaxed) {
        eprintln!("{notice}");
    }
}
