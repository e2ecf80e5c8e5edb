//! The `plec` command line. All the work happens in the library; `main`
//! only picks the allocator and turns the outcome into an exit code.

use std::process::ExitCode;

/// mimalloc: candle's large temporaries are much faster to allocate than
/// with the system allocator (toolchain.md: relu on 8M floats ~20 ms -> ~5 ms).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any other thread exists, as mimalloc asks of option changes.
    plec::alloc::keep_freed_memory();
    exit_quietly_on_closed_pipe();
    plec::cli::main()
}

/// `plec explain | head` closes the pipe early: end the way other Unix
/// tools do (SIGPIPE) instead of `println!` panicking on the write error.
fn exit_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal's disposition to its default, once, before
    // any thread exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
