//! Ctrl-C and SIGTERM during training: the first one only sets a flag, so
//! the training loop finishes its step, writes a checkpoint and stops; the
//! handler then reverts to the default, so a second signal ends the
//! process at once.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a stop was asked for (by a signal, or by `request`).
pub(crate) fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM (once per process; the CLI
/// calls it before training).
pub(crate) fn install() {
    #[cfg(unix)]
    // SAFETY: `on_signal` only stores to an atomic, which is
    // async-signal-safe; the sigaction struct is fully initialized
    // (zeroed, then the handler, an empty mask and the flags set).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        // One-shot: the second Ctrl-C kills as usual. SA_RESTART keeps
        // reads and writes of other threads from failing with EINTR.
        action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}
