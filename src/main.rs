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
    plec::cli::main()
}
