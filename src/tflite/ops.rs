//! Turns a `.tflite` operator (code, options table, tensor indices) into an executable
//! [`Node`]: options decoded, constant weights copied into the kernel's parameters,
//! integer constants (shapes, paddings, axes) resolved.

use std::sync::Arc;

use super::array::Array;
use super::builtin as op;
use super::flatbuffer::{self, Table};
use super::kernels::activation::{self, Activation};
use super::kernels::binary::{binary, binary_owned, BinaryOp};
use super::kernels::conv::Conv2d;
use super::kernels::depthwise::DepthwiseConv2d;
use super::kernels::fully_connected::FullyConnected;
use super::kernels::pool::{Pool2d, PoolKind};
use super::kernels::reduce::mean;
use super::kernels::resize::ResizeBilinear;
use super::kernels::shape::{concatenate, depth_to_space, pad, reshape_shape};
use super::padding::Padding;
use super::schema::{OperatorDef, TensorDef};

/// A value known when the model is loaded.
#[derive(Debug, Clone)]
pub enum Constant {
    Float(Arc<Array>),
    Int { shape: Vec<usize>, values: Vec<i32> },
}

/// What a node computes.
#[derive(Debug, Clone)]
pub enum Kernel {
    Conv2d(Conv2d),
    DepthwiseConv2d(DepthwiseConv2d),
    FullyConnected(FullyConnected),
    Pool(Pool2d),
    Binary {
        op: BinaryOp,
        activation: Activation,
    },
    Prelu {
        alpha: Vec<f32>,
    },
    Activation(Activation),
    Logistic,
    Pad {
        paddings: Vec<(usize, usize)>,
    },
    Concatenation {
        axis: i32,
        activation: Activation,
    },
    Reshape {
        new_shape: Vec<i32>,
    },
    ResizeBilinear(ResizeBilinear),
    Mean {
        axes: Vec<i32>,
        keep_dims: bool,
    },
    DepthToSpace {
        block: usize,
    },
    /// DEQUANTIZE / DENSIFY of a float value: the interpreter already holds dense f32.
    Identity,
}

/// One executable operator: reads `inputs` (float tensors, constant or computed), writes `output`.
#[derive(Debug, Clone)]
pub struct Node {
    pub index: usize,
    pub name: String,
    pub kernel: Kernel,
    pub inputs: Vec<usize>,
    pub output: usize,
}

/// Whether a kernel can overwrite its first input when nobody else needs it.
impl Kernel {
    pub fn works_in_place(&self) -> bool {
        matches!(
            self,
            Kernel::Activation(_)
                | Kernel::Binary { .. }
                | Kernel::Logistic
                | Kernel::Prelu { .. }
                | Kernel::Reshape { .. }
                | Kernel::Identity
        )
    }

    /// Runs the kernel. When the caller gives up the first input for an in-place kernel it
    /// passes it as `owned` and leaves it out of `inputs`.
    pub fn run(&self, inputs: &[&Array], owned: Option<Array>) -> Result<Array, String> {
        let first = || {
            inputs
                .first()
                .copied()
                .ok_or_else(|| "missing input".to_string())
        };
        let take = |owned: Option<Array>| -> Result<Array, String> {
            match owned {
                Some(a) => Ok(a),
                None => Ok(first()?.clone()),
            }
        };
        match self {
            Kernel::Conv2d(k) => k.run(first()?),
            Kernel::DepthwiseConv2d(k) => k.run(first()?),
            Kernel::FullyConnected(k) => k.run(first()?),
            Kernel::Pool(k) => k.run(first()?),
            Kernel::Binary { op, activation } => match owned {
                Some(a) => {
                    let b = inputs.first().ok_or("missing second input")?;
                    binary_owned(*op, a, b, *activation)
                }
                None => {
                    let b = inputs.get(1).ok_or("missing second input")?;
                    binary(*op, first()?, b, *activation)
                }
            },
            Kernel::Prelu { alpha } => {
                let mut a = take(owned)?;
                if alpha.is_empty() || a.len() % alpha.len() != 0 {
                    return Err(format!(
                        "alpha of length {} does not tile input {:?}",
                        alpha.len(),
                        a.shape
                    ));
                }
                activation::prelu(&mut a.data, alpha);
                Ok(a)
            }
            Kernel::Activation(act) => {
                let mut a = take(owned)?;
                act.apply(&mut a.data);
                Ok(a)
            }
            Kernel::Logistic => {
                let mut a = take(owned)?;
                activation::logistic(&mut a.data);
                Ok(a)
            }
            Kernel::Pad { paddings } => pad(first()?, paddings),
            Kernel::Concatenation { axis, activation } => {
                let rank = first()?.rank();
                let axis = normalise_axis(*axis, rank)?;
                let mut out = concatenate(inputs, axis)?;
                activation.apply(&mut out.data);
                Ok(out)
            }
            Kernel::Reshape { new_shape } => {
                let mut a = take(owned)?;
                a.shape = reshape_shape(a.len(), new_shape)?;
                Ok(a)
            }
            Kernel::ResizeBilinear(k) => k.run(first()?),
            Kernel::Mean { axes, keep_dims } => {
                let input = first()?;
                let mut resolved = axes
                    .iter()
                    .map(|&a| normalise_axis(a, input.rank()))
                    .collect::<Result<Vec<_>, _>>()?;
                resolved.sort_unstable();
                resolved.dedup();
                mean(input, &resolved, *keep_dims)
            }
            Kernel::DepthToSpace { block } => depth_to_space(first()?, *block),
            Kernel::Identity => take(owned),
        }
    }
}

fn normalise_axis(axis: i32, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i32 } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Everything [`build`] needs to look up tensors.
pub struct Context<'a> {
    pub tensors: &'a [TensorDef],
    pub constants: &'a [Option<Constant>],
}

impl Context<'_> {
    fn float(&self, id: usize) -> Result<&Arc<Array>, String> {
        match &self.constants[id] {
            Some(Constant::Float(a)) => Ok(a),
            Some(Constant::Int { .. }) => Err(format!(
                "tensor '{}' is an integer constant, expected float",
                self.tensors[id].name
            )),
            None => Err(format!(
                "tensor '{}' must be a constant",
                self.tensors[id].name
            )),
        }
    }

    fn int(&self, id: usize) -> Result<&[i32], String> {
        match &self.constants[id] {
            Some(Constant::Int { values, .. }) => Ok(values),
            _ => Err(format!(
                "tensor '{}' must be an integer constant",
                self.tensors[id].name
            )),
        }
    }
}

fn input(def: &OperatorDef, i: usize) -> Result<usize, String> {
    def.inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("missing input {i}"))
}

fn options<'a>(def: &OperatorDef<'a>) -> Result<Table<'a>, String> {
    def.options
        .ok_or_else(|| "missing builtin options".to_string())
}

fn fb<T>(r: flatbuffer::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn activation(table: &Table, slot: usize) -> Result<Activation, String> {
    match fb(table.scalar::<i8>(slot, 0, "fused_activation_function"))? {
        0 => Ok(Activation::None),
        1 => Ok(Activation::Relu),
        2 => Ok(Activation::ReluN1To1),
        3 => Ok(Activation::Relu6),
        4 => Ok(Activation::Tanh),
        other => Err(format!("unsupported fused activation {other}")),
    }
}

fn padding(table: &Table) -> Result<Padding, String> {
    match fb(table.scalar::<i8>(0, 0, "padding"))? {
        0 => Ok(Padding::Same),
        1 => Ok(Padding::Valid),
        other => Err(format!("unknown padding {other}")),
    }
}

fn positive(
    table: &Table,
    slot: usize,
    default: i32,
    field: &'static str,
) -> Result<usize, String> {
    let v = fb(table.scalar::<i32>(slot, default, field))?;
    if v <= 0 {
        return Err(format!("{field} must be positive, got {v}"));
    }
    Ok(v as usize)
}

/// Bias input `slot` of a conv / dense op: constant, or zeros when omitted.
fn bias(ctx: &Context, def: &OperatorDef, slot: usize, len: usize) -> Result<Vec<f32>, String> {
    match def.inputs.get(slot).copied().flatten() {
        Some(id) => {
            let b = ctx.float(id)?;
            if b.len() != len {
                return Err(format!("bias has {} values, expected {len}", b.len()));
            }
            Ok(b.data.clone())
        }
        None => Ok(vec![0.0; len]),
    }
}

/// Decodes builtin operator `code` into a kernel and its runtime inputs. `None` means the
/// interpreter has no kernel for this operator.
pub fn build(
    ctx: &Context,
    def: &OperatorDef,
    code: i32,
) -> Result<Option<(Kernel, Vec<usize>)>, String> {
    let data_input = || input(def, 0);
    let kernel = match code {
        op::CONV_2D => {
            let t = options(def)?;
            let w = ctx.float(input(def, 1)?)?;
            let [o, kh, kw, i] = w.shape[..] else {
                return Err(format!("filter shape {:?} is not OHWI", w.shape));
            };
            Kernel::Conv2d(Conv2d::new(
                w.data.clone(),
                bias(ctx, def, 2, o)?,
                (o, kh, kw, i),
                (
                    positive(&t, 2, 0, "stride_h")?,
                    positive(&t, 1, 0, "stride_w")?,
                ),
                (
                    positive(&t, 5, 1, "dilation_h_factor")?,
                    positive(&t, 4, 1, "dilation_w_factor")?,
                ),
                padding(&t)?,
                activation(&t, 3)?,
            ))
        }
        op::DEPTHWISE_CONV_2D => {
            let t = options(def)?;
            let w = ctx.float(input(def, 1)?)?;
            let [1, kh, kw, oc] = w.shape[..] else {
                return Err(format!(
                    "filter shape {:?} is not [1, kh, kw, channels]",
                    w.shape
                ));
            };
            // The options' depth_multiplier is unreliable in newer files; derive it from shapes.
            let in_channels = *ctx.tensors[data_input()?]
                .shape
                .last()
                .ok_or("input has no channel dim")?;
            if in_channels == 0 || oc % in_channels != 0 {
                return Err(format!(
                    "{oc} output channels are not a multiple of {in_channels} input channels"
                ));
            }
            Kernel::DepthwiseConv2d(DepthwiseConv2d::new(
                w.data.clone(),
                bias(ctx, def, 2, oc)?,
                (kh, kw),
                oc / in_channels,
                oc,
                (
                    positive(&t, 2, 0, "stride_h")?,
                    positive(&t, 1, 0, "stride_w")?,
                ),
                (
                    positive(&t, 6, 1, "dilation_h_factor")?,
                    positive(&t, 5, 1, "dilation_w_factor")?,
                ),
                padding(&t)?,
                activation(&t, 4)?,
            ))
        }
        op::FULLY_CONNECTED => {
            let t = options(def)?;
            if fb(t.scalar::<i8>(1, 0, "weights_format"))? != 0 {
                return Err("only the DEFAULT weights format is supported".into());
            }
            let w = ctx.float(input(def, 1)?)?;
            let [units, inputs] = w.shape[..] else {
                return Err(format!(
                    "weights shape {:?} is not [units, inputs]",
                    w.shape
                ));
            };
            let bias = match def.inputs.get(2).copied().flatten() {
                Some(_) => Some(bias(ctx, def, 2, units)?),
                None => None,
            };
            Kernel::FullyConnected(FullyConnected::new(
                &w.data,
                bias.as_deref(),
                units,
                inputs,
                fb(t.boolean(2, false, "keep_num_dims"))?,
                activation(&t, 0)?,
            ))
        }
        op::MAX_POOL_2D | op::AVERAGE_POOL_2D => {
            let t = options(def)?;
            Kernel::Pool(Pool2d {
                kind: if code == op::MAX_POOL_2D {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                },
                padding: padding(&t)?,
                stride: (
                    positive(&t, 2, 0, "stride_h")?,
                    positive(&t, 1, 0, "stride_w")?,
                ),
                filter: (
                    positive(&t, 4, 0, "filter_height")?,
                    positive(&t, 3, 0, "filter_width")?,
                ),
                activation: activation(&t, 5)?,
            })
        }
        op::ADD | op::SUB | op::MUL | op::DIV | op::MAXIMUM | op::MINIMUM => {
            let fused = match (code, def.options) {
                (op::MAXIMUM | op::MINIMUM, _) | (_, None) => Activation::None,
                (_, Some(t)) => activation(&t, 0)?,
            };
            let binary_op = match code {
                op::ADD => BinaryOp::Add,
                op::SUB => BinaryOp::Sub,
                op::MUL => BinaryOp::Mul,
                op::DIV => BinaryOp::Div,
                op::MAXIMUM => BinaryOp::Maximum,
                _ => BinaryOp::Minimum,
            };
            return Ok(Some((
                Kernel::Binary {
                    op: binary_op,
                    activation: fused,
                },
                vec![input(def, 0)?, input(def, 1)?],
            )));
        }
        op::PRELU => {
            let alpha = ctx.float(input(def, 1)?)?;
            let x_shape = &ctx.tensors[data_input()?].shape;
            // Alpha must tile the trailing dims of the input (e.g. [1, 1, C] over NHWC).
            let trimmed: Vec<usize> = alpha
                .shape
                .iter()
                .copied()
                .skip_while(|&d| d == 1)
                .collect();
            if trimmed.len() > x_shape.len()
                || x_shape[x_shape.len() - trimmed.len()..] != trimmed[..]
            {
                return Err(format!(
                    "alpha shape {:?} does not broadcast over the trailing dims of {x_shape:?}",
                    alpha.shape
                ));
            }
            Kernel::Prelu {
                alpha: alpha.data.clone(),
            }
        }
        op::RELU => Kernel::Activation(Activation::Relu),
        op::RELU6 => Kernel::Activation(Activation::Relu6),
        op::RELU_N1_TO_1 => Kernel::Activation(Activation::ReluN1To1),
        op::TANH => Kernel::Activation(Activation::Tanh),
        op::LOGISTIC => Kernel::Logistic,
        op::PAD => {
            let values = ctx.int(input(def, 1)?)?;
            if values.len() % 2 != 0 || values.iter().any(|&v| v < 0) {
                return Err(format!(
                    "paddings {values:?} are not non-negative (before, after) pairs"
                ));
            }
            Kernel::Pad {
                paddings: values
                    .chunks_exact(2)
                    .map(|p| (p[0] as usize, p[1] as usize))
                    .collect(),
            }
        }
        op::CONCATENATION => {
            let t = options(def)?;
            let inputs = def
                .inputs
                .iter()
                .map(|i| i.ok_or("omitted concatenation input"))
                .collect::<Result<Vec<_>, _>>()?;
            let kernel = Kernel::Concatenation {
                axis: fb(t.scalar::<i32>(0, 0, "axis"))?,
                activation: activation(&t, 1)?,
            };
            return Ok(Some((kernel, inputs)));
        }
        op::RESHAPE => {
            // New shape from the shape tensor, else the options, else the output's static shape.
            let from_tensor = def
                .inputs
                .get(1)
                .copied()
                .flatten()
                .map(|id| ctx.int(id).map(<[i32]>::to_vec))
                .transpose()?;
            let from_options = match def.options {
                Some(t) => fb(t.scalars::<i32>(0, "new_shape"))?,
                None => Vec::new(),
            };
            let new_shape = match (from_tensor, from_options) {
                (Some(s), _) => s,
                (None, s) if !s.is_empty() => s,
                _ => {
                    let out = def.outputs.first().ok_or("missing output")?;
                    ctx.tensors[*out].shape.iter().map(|&d| d as i32).collect()
                }
            };
            Kernel::Reshape { new_shape }
        }
        op::RESIZE_BILINEAR => {
            let t = options(def)?;
            let size = ctx.int(input(def, 1)?)?;
            let [h, w] = size[..] else {
                return Err(format!("size {size:?} is not [height, width]"));
            };
            if h <= 0 || w <= 0 {
                return Err(format!("size {size:?} must be positive"));
            }
            let align_corners = fb(t.boolean(2, false, "align_corners"))?;
            let half_pixel_centers = fb(t.boolean(3, false, "half_pixel_centers"))?;
            if align_corners && half_pixel_centers {
                return Err("align_corners and half_pixel_centers are both set".into());
            }
            Kernel::ResizeBilinear(ResizeBilinear {
                out_h: h as usize,
                out_w: w as usize,
                align_corners,
                half_pixel_centers,
            })
        }
        op::MEAN => {
            let keep_dims = match def.options {
                Some(t) => fb(t.boolean(0, false, "keep_dims"))?,
                None => false,
            };
            Kernel::Mean {
                axes: ctx.int(input(def, 1)?)?.to_vec(),
                keep_dims,
            }
        }
        op::DEPTH_TO_SPACE => Kernel::DepthToSpace {
            block: positive(&options(def)?, 0, 0, "block_size")?,
        },
        op::DEQUANTIZE | op::DENSIFY => Kernel::Identity,
        _ => return Ok(None),
    };
    Ok(Some((kernel, vec![data_input()?])))
}
