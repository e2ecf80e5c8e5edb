//! The allocator's memory policy. The `plec` binary allocates with
//! mimalloc (see `main.rs`); these switches tune when it hands freed memory
//! back to the OS. In a process that does not use mimalloc as its global
//! allocator (the library's tests) they only touch mimalloc's unused heap.

/// mimalloc's `mi_option_purge_delay` in the v3 option enum
/// (`c_src/mimalloc/v3/include/mimalloc.h` of libmimalloc-sys 0.1.49, which
/// builds v3 unless its `v2` feature is on; plec does not turn it on).
const MI_OPTION_PURGE_DELAY: i32 = 15;

// Links mimalloc (its C library defines the two functions below) into
// every binary of the crate, the tests included.
use mimalloc as _;

extern "C" {
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
    fn mi_collect(force: bool);
}

fn set_purge_delay(ms: std::os::raw::c_long) {
    // SAFETY: `mi_option_set` stores one aligned integer that mimalloc
    // reads when memory is freed; it takes no pointers.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Keep freed memory for reuse instead of returning it to the OS. By
/// default mimalloc purges freed pages after 10 ms, so every training step's
/// temporaries (the `gemm` crate's packing buffers, candle's tensors) were
/// faulted in and zeroed by the kernel again: with the native engine ~3 900
/// page faults per PLE step at batch 1024 (fp32), with the candle path
/// ~5 000 and `clear_page_erms` at 14% of the time. Call once at start-up,
/// before other threads exist.
pub fn keep_freed_memory() {
    set_purge_delay(-1);
}

/// Runs `free` (which drops large buffers) with purging on, so the freed
/// pages go back to the OS at once, then restores `keep_freed_memory`.
/// Without it a finished training run would keep its activation buffers
/// resident while it evaluates and writes the trained plan, and that copy
/// would set the run's peak memory.
pub fn returning_freed_memory<T>(free: impl FnOnce() -> T) -> T {
    set_purge_delay(0);
    let out = free();
    // SAFETY: no arguments; frees mimalloc's own cached empty pages.
    unsafe { mi_collect(true) };
    set_purge_delay(-1);
    out
}
