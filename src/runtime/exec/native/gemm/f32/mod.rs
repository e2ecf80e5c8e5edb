//! Our f32 micro-kernels, one per instruction set, as backends of the GEMM
//! frame (`super::frame`): AVX-512 (14 x 32 tiles) and AVX2 + FMA (6 x 16).

pub(super) mod avx2;
pub(super) mod avx512;
