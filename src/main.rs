//! The `plec` command line. All the work happens in the library; `main`
//! only picks the allocator and turns the outcome into an exit code.

use std::process::ExitCode;

/// mimalloc: candle's large temporaries are much faster to allocate than
/// with the system allocator (toolchain.md: relu on 8M floats ~20 ms -> ~5 ms).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` in the v3 option enum
/// (`c_src/mimalloc/v3/include/mimalloc.h` of libmimalloc-sys 0.1.49, which
/// builds v3 unless its `v2` feature is on; plec does not turn it on).
const MI_OPTION_PURGE_DELAY: i32 = 15;

/// Never hand freed memory back to the OS (`-1`). By default mimalloc purges
/// freed pages after 10 ms, so each training step's large temporaries were
/// faulted in and zeroed by the kernel again: PLE at batch 1024 took ~59 000
/// page faults in 12 steps (perf: `clear_page_erms` at 14% of the time),
/// ~950 without purging, and a step went from ~964 to ~764 ms. The peak
/// resident size is unchanged (it is the high-water mark either way).
const PURGE_DELAY_MS: std::os::raw::c_long = -1;

extern "C" {
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
}

fn main() -> ExitCode {
    // SAFETY: `mi_option_set` only stores an option value; it is called
    // before any other thread exists, as mimalloc asks of option changes.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    plec::cli::main()
}
