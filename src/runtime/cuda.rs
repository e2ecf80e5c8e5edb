//! CUDA-only pieces of the runtime (built with `--features cuda`).
//!
//! Dropout masks. On the CPU a mask is drawn from a [`SplitMix64`] stream
//! seeded per (run seed, step, op) and uploaded. Drawing it on the host
//! for a GPU run would cost one generator call per element on one CPU core
//! plus an upload every step, so on CUDA the same stream is computed on the
//! device instead. SplitMix64 is counter based: its `k`-th output is a
//! fixed mix of `state + k * GOLDEN`, so thread `i` computes element `i`
//! without the ones before it. The comparison against the ratio is done in
//! f64 exactly as on the host (`(z >> 11) * 2^-53 < ratio`, both exact), so
//! a CUDA mask is bit-for-bit the CPU mask: the same plan, data and seed
//! drop the same units on either device.
//!
//! candle's own `Tensor::rand` was not used: on CUDA it draws from one
//! cuRAND generator per device (reseeding means recreating it), and on the
//! CPU it cannot be seeded at all, so masks would differ between devices
//! and runs.
//!
//! The kernel is compiled once per process with NVRTC (about 0.1 s) for
//! the virtual architecture NVRTC defaults to, so it loads on any GPU the
//! driver supports.

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc;
use candle_core::cuda_backend::WrapErr;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, Result, Storage, Tensor};

use crate::rng::SplitMix64;

const MODULE: &str = "plec_dropout";
const FUNC: &str = "plec_dropout_mask";

/// SplitMix64 as in `rng.rs`, one element per thread (grid-stride loop).
const SOURCE: &str = r#"
extern "C" __global__ void plec_dropout_mask(
    float* out, unsigned long long state, double ratio, unsigned long long n)
{
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += stride) {
        unsigned long long z = state + (i + 1ULL) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z = z ^ (z >> 31);
        double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
        out[i] = u < ratio ? 0.0f : 1.0f;
    }
}
"#;

/// The kernel's PTX, compiled on first use.
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        nvrtc::compile_ptx(SOURCE)
            .map(|p| p.to_src())
            .map_err(|e| format!("NVRTC could not compile the dropout kernel: {e:?}"))
    })
    .as_ref()
    .map(String::as_str)
    .map_err(|e| candle_core::Error::Msg(e.clone()))
}

/// The keep-mask (`0.0`/`1.0`, f32) of `shape` for dropout at `ratio`,
/// drawn on `dev` from `rng`'s stream; `rng` is advanced past the
/// elements drawn, as the host version leaves it.
pub fn dropout_mask(
    dev: &CudaDevice,
    shape: &[usize],
    ratio: f32,
    rng: &mut SplitMix64,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let threads = 256u32;
    let blocks = n.div_ceil(threads as usize).clamp(1, 65_535) as u32;
    let func = dev.get_or_load_custom_func(FUNC, MODULE, ptx()?)?;
    // SAFETY: the kernel writes every one of the `n` elements before any
    // read (grid-stride loop over 0..n).
    let mut out = unsafe { dev.alloc::<f32>(n.max(1))? };
    if n > 0 {
        let state = rng.state();
        let ratio = ratio as f64;
        let count = n as u64;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = func.builder();
        launch.arg(&mut out);
        launch.arg(&state);
        launch.arg(&ratio);
        launch.arg(&count);
        // SAFETY: the argument list matches the kernel's signature
        // (float*, u64, double, u64) and `out` holds `n` floats.
        unsafe { launch.launch(cfg) }.w()?;
    }
    rng.skip(n as u64);
    let storage = CudaStorage::wrap_cuda_slice(out, dev.clone());
    let t = Tensor::from_storage(Storage::Cuda(storage), n.max(1), BackpropOp::none(), false);
    if n == 0 {
        return t.narrow(0, 0, 0)?.reshape(shape);
    }
    t.reshape(shape)
}
