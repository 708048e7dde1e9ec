//! Seeded Gaussian noise that is bit-compatible with PyTorch's CPU generator.
//!
//! `TorchGenerator::new(S).randn(shape)` returns exactly what
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(S))` returns (float32), so
//! a seed gives the same image here as in diffusers or ComfyUI. Consecutive draws from one
//! generator also follow torch, including the cached second Box–Muller value of its scalar
//! path (diffusers draws the initial latents and then every ancestral step's noise from one
//! generator).
//!
//! What torch does (ATen `CPUGeneratorImpl`, `core/MT19937RNGEngine.h`,
//! `core/DistributionsHelper.h`, `core/TransformationHelper.h`,
//! `native/cpu/DistributionTemplates.h`):
//! - the engine is mt19937 seeded with the low 32 bits of the seed (`2**40` seeds like `0`);
//! - a float uniform is `(u32 & (2^24 - 1)) * 2^-24`, a double uniform takes two u32 (high word
//!   first) and keeps 53 bits;
//! - tensors with at least 16 elements are filled with uniforms first, then transformed in
//!   blocks of 16 by Box–Muller (first 8 of a block are radii, last 8 angles); when the size is
//!   not a multiple of 16, the last 16 elements are redrawn and transformed again;
//! - smaller tensors use the scalar `normal_distribution<double>`, which draws two double
//!   uniforms, returns `r·cos θ` and caches `r·sin θ` for the next scalar draw.
//!
//! The float Box–Muller step depends on the ATen CPU capability torch picks at run time. On
//! every x86-64 CPU with AVX2 (and on AVX-512 CPUs, which use the same kernel) torch evaluates
//! `log`/`sincos` with the Cephes polynomials of `native/cpu/avx_mathfun.h`, compiled by GCC
//! with multiply–adds contracted to FMA. [`NormalKernel::Avx2`] (the default) reproduces that
//! bit for bit; [`NormalKernel::Generic`] reproduces torch's portable kernel (capability
//! `DEFAULT`, e.g. `ATEN_CPU_CAPABILITY=default`), which calls the C library's `logf`/`cosf`/
//! `sinf` as Rust's `f32` methods do on Linux. Double tensors and tensors with fewer than 16
//! elements do not depend on the capability.

use candle_core::{DType, Device, Tensor};

/// Errors building noise tensors.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("noise tensor of shape {shape:?}: {source}")]
    Tensor {
        shape: Vec<usize>,
        #[source]
        source: candle_core::Error,
    },
    #[error("noise of dtype {0:?} is not supported (f32 or f64)")]
    DType(DType),
}

const STATE_N: usize = 624;
const STATE_M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The mt19937 engine exactly as ATen seeds and steps it.
#[derive(Clone, Debug)]
pub struct Mt19937 {
    state: [u32; STATE_N],
    /// Outputs left before the state must be regenerated (ATen's `left_`, starts at 1).
    left: usize,
    next: usize,
}

impl Mt19937 {
    /// ATen's `init_with_uint32`: only the low 32 bits of the seed matter.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; STATE_N];
        state[0] = seed as u32;
        for j in 1..STATE_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self {
            state,
            left: 1,
            next: 0,
        }
    }

    fn twist(u: u32, v: u32) -> u32 {
        let mixed = (u & UPPER_MASK) | (v & LOWER_MASK);
        (mixed >> 1) ^ if v & 1 != 0 { MATRIX_A } else { 0 }
    }

    fn next_state(&mut self) {
        let s = &mut self.state;
        for i in 0..STATE_N - STATE_M {
            s[i] = s[i + STATE_M] ^ Self::twist(s[i], s[i + 1]);
        }
        for i in STATE_N - STATE_M..STATE_N - 1 {
            s[i] = s[i + STATE_M - STATE_N] ^ Self::twist(s[i], s[i + 1]);
        }
        s[STATE_N - 1] = s[STATE_M - 1] ^ Self::twist(s[STATE_N - 1], s[0]);
        self.left = STATE_N;
        self.next = 0;
    }

    /// Next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.next_state();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// Which of torch's float32 Box–Muller kernels to reproduce (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormalKernel {
    /// x86-64 with AVX2 or AVX-512: Cephes `log`/`sincos` polynomials with FMA.
    #[default]
    Avx2,
    /// torch's portable kernel: C library `logf`/`cosf`/`sinf`, angle computed in double.
    Generic,
}

/// A `torch.Generator("cpu")` after `manual_seed(seed)`.
#[derive(Clone, Debug)]
pub struct TorchGenerator {
    seed: u64,
    engine: Mt19937,
    kernel: NormalKernel,
    /// Second Box–Muller value cached by torch's scalar normal sampler.
    next_double_normal: Option<f64>,
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)` as torch runs on x86-64 (AVX2 / AVX-512).
    pub fn new(seed: u64) -> Self {
        Self::with_kernel(seed, NormalKernel::default())
    }

    /// A generator reproducing a specific torch float32 normal kernel.
    pub fn with_kernel(seed: u64, kernel: NormalKernel) -> Self {
        Self {
            seed,
            engine: Mt19937::new(seed),
            kernel,
            next_double_normal: None,
        }
    }

    /// The seed this generator was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `generator->random()`.
    pub fn random_u32(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// `generator->random64()`: two draws, the first one is the high word.
    pub fn random_u64(&mut self) -> u64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits.
    pub fn uniform_f32(&mut self) -> f32 {
        const MASK: u32 = (1 << f32::MANTISSA_DIGITS) - 1;
        const DIVISOR: f32 = 1.0 / (1u32 << f32::MANTISSA_DIGITS) as f32;
        (self.random_u32() & MASK) as f32 * DIVISOR
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        const MASK: u64 = (1 << f64::MANTISSA_DIGITS) - 1;
        const DIVISOR: f64 = 1.0 / (1u64 << f64::MANTISSA_DIGITS) as f64;
        (self.random_u64() & MASK) as f64 * DIVISOR
    }

    /// `at::normal_distribution<double>(0, 1)`, torch's scalar path (with its cache).
    pub fn normal_scalar_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Standard normal float32 samples, as `torch.randn(n, dtype=torch.float32)`.
    pub fn randn_f32(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_scalar_f64() as f32).collect();
        }
        let box_muller = match self.kernel {
            NormalKernel::Avx2 => box_muller_16_f32_avx2,
            NormalKernel::Generic => box_muller_16_f32_generic,
        };
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller(block);
        }
        if n % 16 != 0 {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller(tail);
        }
        data
    }

    /// Standard normal float64 samples, as `torch.randn(n, dtype=torch.float64)`.
    pub fn randn_f64(&mut self, n: usize) -> Vec<f64> {
        if n < 16 {
            return (0..n).map(|_| self.normal_scalar_f64()).collect();
        }
        let mut data: Vec<f64> = (0..n).map(|_| self.uniform_f64()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16_f64(block);
        }
        if n % 16 != 0 {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f64();
            }
            box_muller_16_f64(tail);
        }
        data
    }

    /// `torch.randn(shape, generator=self, dtype=dtype)` as a candle tensor on `device`.
    pub fn randn(
        &mut self,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor, NoiseError> {
        let n = shape.iter().product();
        let tensor = match dtype {
            DType::F32 => Tensor::from_vec(self.randn_f32(n), shape, device),
            DType::F64 => Tensor::from_vec(self.randn_f64(n), shape, device),
            other => return Err(NoiseError::DType(other)),
        };
        tensor.map_err(|source| NoiseError::Tensor {
            shape: shape.to_vec(),
            source,
        })
    }
}

/// Where stochastic samplers get their Gaussian noise (float32, like the model output).
pub trait NoiseSource {
    fn randn(&mut self, shape: &[usize], device: &Device) -> Result<Tensor, NoiseError>;
}

impl NoiseSource for TorchGenerator {
    fn randn(&mut self, shape: &[usize], device: &Device) -> Result<Tensor, NoiseError> {
        TorchGenerator::randn(self, shape, DType::F32, device)
    }
}

/// Box–Muller on one block of 16 float uniforms, in place: torch's AVX2 `NormalFill16<float>`.
fn box_muller_16_f32_avx2(block: &mut [f32]) {
    // The angle is a float product here, unlike the generic kernel.
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * cephes_log(u1)).sqrt();
        let (sin, cos) = cephes_sincos(two_pi * u2);
        block[j] = radius * cos;
        block[j + 8] = radius * sin;
    }
}

/// `log256_ps` of avx_mathfun.h for one lane (inputs here are in (0, 1]).
fn cephes_log(x: f32) -> f32 {
    // The C source writes these as double literals stored into float arrays.
    const SQRT_HALF: f32 = 0.707106781186547524_f64 as f32;
    const P: [f32; 9] = [
        7.0376836292E-2_f64 as f32,
        -1.1514610310E-1_f64 as f32,
        1.1676998740E-1_f64 as f32,
        -1.2420140846E-1_f64 as f32,
        1.4249322787E-1_f64 as f32,
        -1.6668057665E-1_f64 as f32,
        2.0000714765E-1_f64 as f32,
        -2.4999993993E-1_f64 as f32,
        3.3333331174E-1_f64 as f32,
    ];
    const Q1: f32 = -2.12194440e-4_f64 as f32;
    const Q2: f32 = 0.693359375;
    if x <= 0.0 {
        return f32::NAN;
    }
    // Split into mantissa in [0.5, 1) and exponent; denormals are cut off like the SIMD code.
    let bits = x.max(f32::MIN_POSITIVE).to_bits();
    let exponent = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let (m_shift, e) = if m < SQRT_HALF {
        (m, exponent - 1.0)
    } else {
        (0.0, exponent)
    };
    m = (m - 1.0) + m_shift;
    let z = m * m;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    // GCC contracts `y*z + e*Q1`, `x + y + e*Q2` into FMAs; so must we, bit for bit.
    y = y.mul_add(z, e * Q1);
    y -= z * 0.5;
    e.mul_add(Q2, m + y)
}

/// `sincos256_ps` of avx_mathfun.h for one lane: returns (sin, cos).
fn cephes_sincos(x: f32) -> (f32, f32) {
    const FOUR_OVER_PI: f32 = 1.27323954473516_f64 as f32;
    const DP: [f32; 3] = [
        -0.78515625,
        -2.4187564849853515625e-4_f64 as f32,
        -3.77489497744594108e-8_f64 as f32,
    ];
    const COS_P: [f32; 3] = [
        2.443315711809948E-005_f64 as f32,
        -1.388731625493765E-003_f64 as f32,
        4.166664568298827E-002_f64 as f32,
    ];
    const SIN_P: [f32; 3] = [
        -1.9515295891E-4_f64 as f32,
        8.3321608736E-3_f64 as f32,
        -1.6666654611E-1_f64 as f32,
    ];
    let sign_sin = x.is_sign_negative();
    let mut x = x.abs();
    // Octant j (even), truncated like `_mm256_cvttps_epi32`.
    let j = (((x * FOUR_OVER_PI) as i32) + 1) & !1;
    let y = j as f32;
    let swap_sign_sin = j & 4 != 0;
    let use_sin_poly_for_sin = j & 2 == 0;
    for dp in DP {
        x = y.mul_add(dp, x);
    }
    let sign_cos = !(j - 2) & 4 != 0;
    let sign_sin = sign_sin ^ swap_sign_sin;
    let z = x * x;
    let mut cos_poly = COS_P[0];
    for &p in &COS_P[1..] {
        cos_poly = cos_poly.mul_add(z, p);
    }
    cos_poly *= z;
    cos_poly = cos_poly.mul_add(z, -(z * 0.5)) + 1.0;
    let mut sin_poly = SIN_P[0];
    for &p in &SIN_P[1..] {
        sin_poly = sin_poly.mul_add(z, p);
    }
    sin_poly *= z;
    sin_poly = sin_poly.mul_add(x, x);
    // Select with masks and adds exactly as the SIMD code does (keeps signed zeros identical).
    let (sin_from_cos, sin_from_sin) = if use_sin_poly_for_sin {
        (0.0, sin_poly)
    } else {
        (cos_poly, 0.0)
    };
    let sin = sin_from_cos + sin_from_sin;
    let cos = (cos_poly - sin_from_cos) + (sin_poly - sin_from_sin);
    (
        if sign_sin { -sin } else { sin },
        if sign_cos { -cos } else { cos },
    )
}

/// Box–Muller on one block of 16 float uniforms, in place: torch's generic `NormalFill16`.
fn box_muller_16_f32_generic(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j]; // [0, 1) -> (0, 1] for the log
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        // torch computes the angle in double (`2.0f * pi<double> * u2`) and stores it as float.
        let theta = (2.0 * std::f64::consts::PI * u2 as f64) as f32;
        block[j] = radius * theta.cos();
        block[j + 8] = radius * theta.sin();
    }
}

/// Box–Muller on one block of 16 double uniforms, in place (`NormalFill16<double>`).
fn box_muller_16_f64(block: &mut [f64]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        block[j] = radius * theta.cos();
        block[j + 8] = radius * theta.sin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_reference_sequence() {
        // The 10000th output of mt19937 seeded with 5489 is 4123659995 (C++ [rand.predef]).
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn only_low_32_bits_of_seed_matter() {
        let mut a = TorchGenerator::new(7);
        let mut b = TorchGenerator::new(7 + (1u64 << 40));
        assert_eq!(a.randn_f32(40), b.randn_f32(40));
    }

    #[test]
    fn scalar_path_caches_second_value() {
        let mut g = TorchGenerator::new(3);
        let pair = g.randn_f64(2);
        let mut h = TorchGenerator::new(3);
        let first = h.randn_f64(1);
        let second = h.randn_f64(1);
        assert_eq!(pair, vec![first[0], second[0]]);
    }
}
