//! Whether this process may use AMX-BF16: CPUID, and the tile-data
//! permission Linux grants through `arch_prctl`.

use std::sync::OnceLock;

static AVAILABLE: OnceLock<bool> = OnceLock::new();

/// Whether AMX-BF16 can be used in this process: CPUID says AMX-TILE and AMX-BF16,
/// and arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA=18) succeeded (done once, cached in a OnceLock).
pub(crate) fn available() -> bool {
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // The packers use AVX-512 BW/BF16 (every AMX-BF16 CPU has them), so require them too.
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512bf16"))
    {
        return false;
    }
    // CPUID.(EAX=7,ECX=0):EDX bit 24 = AMX-TILE, bit 22 = AMX-BF16.
    // SAFETY: cpuid is always available on x86_64 (the call is safe on newer toolchains).
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    if !(amx_tile && amx_bf16) {
        return false;
    }
    // Linux keeps the 8 KiB tile-data XSAVE component disabled until the process asks for it;
    // without this the first ldtilecfg raises SIGILL. The permission is process-wide.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}
