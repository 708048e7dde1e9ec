//! [`TfliteModel`]: loads a `.tflite` file, folds everything computable at load time
//! (DENSIFY and DEQUANTIZE of the float16 weights, any op on constants only) and runs the
//! remaining operators in file order on f32 NHWC arrays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use super::array::Array;
use super::builtin;
use super::error::TfliteError;
use super::ops::{self, Constant, Context, Kernel, Node};
use super::padding::Padding;
use super::schema::{self, OpCode, TensorDef, TensorType};
use super::sparsity;

/// Name and static shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Wall time of one executed operator (see [`TfliteModel::profile`]).
#[derive(Debug, Clone)]
pub struct OpTiming {
    pub index: usize,
    pub op: String,
    pub elapsed: Duration,
}

/// A loaded TFLite model, ready to run.
#[derive(Debug)]
pub struct TfliteModel {
    path: PathBuf,
    constants: Vec<Option<Constant>>,
    nodes: Vec<Node>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    input_info: Vec<TensorInfo>,
    output_info: Vec<TensorInfo>,
    /// For each tensor, the index of the last node reading it (usize::MAX: never / graph output).
    last_use: Vec<usize>,
    tensor_names: Vec<String>,
}

fn decode_f16(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect()
}

fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn decode_i32(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Decodes a tensor's constant buffer (densifying sparse storage). `Ok(None)` for tensors
/// without data.
fn decode_constant(t: &TensorDef) -> Result<Option<Constant>, String> {
    if t.data.is_empty() {
        return Ok(None);
    }
    let (width, is_float) = match t.dtype {
        TensorType::Float32 => (4, true),
        TensorType::Float16 => (2, true),
        TensorType::Int32 => (4, false),
        TensorType::Int64 => (8, false),
        other => return Err(format!("constant of type {other:?} is not supported")),
    };
    if !t.data.len().is_multiple_of(width) {
        return Err(format!(
            "{} bytes of data is not a whole number of {width}-byte elements",
            t.data.len()
        ));
    }
    let count: usize = t.shape.iter().product();
    if is_float {
        let stored = if t.dtype == TensorType::Float16 {
            decode_f16(&t.data)
        } else {
            decode_f32(&t.data)
        };
        let dense = match &t.sparsity {
            Some(s) => sparsity::densify(&t.shape, s, &stored)
                .map_err(|e| format!("cannot densify: {e}"))?,
            None => stored,
        };
        if dense.len() != count {
            return Err(format!("{} values for shape {:?}", dense.len(), t.shape));
        }
        return Ok(Some(Constant::Float(Arc::new(Array::new(
            t.shape.clone(),
            dense,
        )))));
    }
    if t.sparsity.is_some() {
        return Err("sparse integer constants are not supported".into());
    }
    let values = if t.dtype == TensorType::Int64 {
        t.data
            .chunks_exact(8)
            .map(|b| {
                let v = i64::from_le_bytes(b.try_into().expect("8-byte chunk"));
                i32::try_from(v).map_err(|_| format!("int64 value {v} does not fit in int32"))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        decode_i32(&t.data)
    };
    if values.len() != count {
        return Err(format!("{} values for shape {:?}", values.len(), t.shape));
    }
    Ok(Some(Constant::Int {
        shape: t.shape.clone(),
        values,
    }))
}

/// Folds each zero PAD of the two spatial dims into the VALID CONV_2D / DEPTHWISE_CONV_2D
/// that is its only reader: the layer then reads zeros outside its input itself, which saves
/// writing and re-reading the padded copy (MediaPipe's models pad before every strided conv).
fn fold_spatial_pads(mut nodes: Vec<Node>, graph_outputs: &[usize]) -> Vec<Node> {
    let mut readers = std::collections::HashMap::<usize, usize>::new();
    for node in &nodes {
        for &i in &node.inputs {
            *readers.entry(i).or_default() += 1;
        }
    }
    let mut folded = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        let Kernel::Pad { paddings } = &nodes[i].kernel else {
            continue;
        };
        let [(0, 0), y, x, (0, 0)] = paddings[..] else {
            continue;
        };
        let padded = nodes[i].output;
        if graph_outputs.contains(&padded) || readers.get(&padded) != Some(&1) {
            continue;
        }
        let Some(j) = nodes.iter().position(|n| n.inputs.first() == Some(&padded)) else {
            continue;
        };
        let explicit = match &mut nodes[j].kernel {
            Kernel::Conv2d(conv)
                if conv.padding == Padding::Valid && conv.explicit_padding.is_none() =>
            {
                &mut conv.explicit_padding
            }
            Kernel::DepthwiseConv2d(conv)
                if conv.padding == Padding::Valid && conv.explicit_padding.is_none() =>
            {
                &mut conv.explicit_padding
            }
            _ => continue,
        };
        *explicit = Some([y, x]);
        nodes[j].inputs[0] = nodes[i].inputs[0];
        folded[i] = true;
    }
    nodes
        .into_iter()
        .zip(folded)
        .filter(|(_, f)| !f)
        .map(|(n, _)| n)
        .collect()
}

impl TfliteModel {
    /// Reads and prepares the model at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TfliteError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| TfliteError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Prepares a model from the bytes of a `.tflite` file; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: PathBuf) -> Result<Self, TfliteError> {
        let def = schema::read_model(bytes).map_err(|source| TfliteError::Malformed {
            path: path.clone(),
            source,
        })?;
        let tensor_error = |t: &TensorDef, detail: String| TfliteError::InvalidTensor {
            path: path.clone(),
            tensor: t.name.clone(),
            detail,
        };

        let mut constants = def
            .tensors
            .iter()
            .map(|t| decode_constant(t).map_err(|d| tensor_error(t, d)))
            .collect::<Result<Vec<_>, _>>()?;

        let mut nodes = Vec::new();
        for (index, op_def) in def.operators.iter().enumerate() {
            let code = match &op_def.code {
                OpCode::Builtin(code) => *code,
                OpCode::Custom(name) => {
                    return Err(TfliteError::UnsupportedOp {
                        path,
                        index,
                        op: format!("custom op '{name}'"),
                    })
                }
            };
            let name = builtin::name(code);
            let invalid = |detail: String| TfliteError::InvalidOp {
                path: path.clone(),
                index,
                op: name.clone(),
                detail,
            };
            let [output] = op_def.outputs[..] else {
                return Err(TfliteError::UnsupportedOp {
                    path,
                    index,
                    op: format!("{name} with {} outputs", op_def.outputs.len()),
                });
            };
            if code == builtin::DEQUANTIZE {
                let source = op_def
                    .inputs
                    .first()
                    .copied()
                    .flatten()
                    .ok_or_else(|| invalid("missing input 0".into()))?;
                let dtype = def.tensors[source].dtype;
                if !matches!(dtype, TensorType::Float16 | TensorType::Float32) {
                    return Err(TfliteError::UnsupportedOp {
                        path,
                        index,
                        op: format!("DEQUANTIZE of a {dtype:?} tensor"),
                    });
                }
            }
            let ctx = Context {
                tensors: &def.tensors,
                constants: &constants,
            };
            let Some((kernel, inputs)) = ops::build(&ctx, op_def, code).map_err(invalid)? else {
                return Err(TfliteError::UnsupportedOp {
                    path,
                    index,
                    op: name,
                });
            };
            let node = Node {
                index,
                name: name.clone(),
                kernel,
                inputs,
                output,
            };

            // Fold operators whose inputs are all constant (weights' DENSIFY / DEQUANTIZE).
            let constant_inputs: Option<Vec<&Array>> = node
                .inputs
                .iter()
                .map(|&i| match &constants[i] {
                    Some(Constant::Float(a)) => Some(a.as_ref()),
                    _ => None,
                })
                .collect();
            if let Some(values) = constant_inputs {
                let folded = node.kernel.run(&values, None).map_err(&invalid)?;
                constants[output] = Some(Constant::Float(Arc::new(folded)));
            } else {
                nodes.push(node);
            }
        }

        let nodes = fold_spatial_pads(nodes, &def.outputs);
        let info = |ids: &[usize]| -> Vec<TensorInfo> {
            ids.iter()
                .map(|&i| TensorInfo {
                    name: def.tensors[i].name.clone(),
                    shape: def.tensors[i].shape.clone(),
                })
                .collect()
        };
        let mut last_use = vec![usize::MAX; def.tensors.len()];
        for (n, node) in nodes.iter().enumerate() {
            for &i in &node.inputs {
                last_use[i] = n;
            }
        }
        for &o in &def.outputs {
            last_use[o] = usize::MAX;
        }
        Ok(TfliteModel {
            input_info: info(&def.inputs),
            output_info: info(&def.outputs),
            inputs: def.inputs.clone(),
            outputs: def.outputs.clone(),
            tensor_names: def.tensors.iter().map(|t| t.name.clone()).collect(),
            path,
            constants,
            nodes,
            last_use,
        })
    }

    /// The model file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Graph inputs in order (NHWC images for the MediaPipe models).
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.input_info
    }

    /// Graph outputs in the model's order.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.output_info
    }

    /// The value of a float tensor known at load time (a weight, or a folded DENSIFY /
    /// DEQUANTIZE result), looked up by tensor name.
    pub fn constant(&self, tensor_name: &str) -> Option<&Array> {
        let id = self.tensor_names.iter().position(|n| n == tensor_name)?;
        match &self.constants[id] {
            Some(Constant::Float(a)) => Some(a.as_ref()),
            _ => None,
        }
    }

    /// Runs the model on f32 arrays (one per input, shapes as in [`Self::inputs`]).
    pub fn run_arrays(&self, inputs: Vec<Array>) -> Result<Vec<Array>, TfliteError> {
        self.execute(inputs, |_, _| {})
    }

    /// Runs the model like [`Self::run_arrays`] and reports each executed operator with its
    /// wall time (operator kinds and indices as in the file; folded operators are absent).
    pub fn profile(&self, inputs: Vec<Array>) -> Result<Vec<OpTiming>, TfliteError> {
        let mut timings = Vec::with_capacity(self.nodes.len());
        self.execute(inputs, |node, elapsed| {
            timings.push(OpTiming {
                index: node.index,
                op: node.name.clone(),
                elapsed,
            })
        })?;
        Ok(timings)
    }

    /// Runs the graph on rayon's pool (see [`crate::pool`]).
    fn execute(
        &self,
        inputs: Vec<Array>,
        on_node: impl FnMut(&Node, Duration) + Send,
    ) -> Result<Vec<Array>, TfliteError> {
        crate::pool::on_worker(|| self.execute_on_worker(inputs, on_node))
    }

    fn execute_on_worker(
        &self,
        inputs: Vec<Array>,
        mut on_node: impl FnMut(&Node, Duration),
    ) -> Result<Vec<Array>, TfliteError> {
        let bad = |detail: String| TfliteError::BadInput {
            path: self.path.clone(),
            detail,
        };
        if inputs.len() != self.inputs.len() {
            return Err(bad(format!(
                "expected {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut slots: Vec<Option<Array>> = vec![None; self.constants.len()];
        for ((array, &id), info) in inputs.into_iter().zip(&self.inputs).zip(&self.input_info) {
            if array.shape != info.shape {
                return Err(bad(format!(
                    "input '{}' must have shape {:?}, got {:?}",
                    info.name, info.shape, array.shape
                )));
            }
            if array.data.len() != array.shape.iter().product::<usize>() {
                return Err(bad(format!(
                    "input '{}' holds {} values, its shape {:?} needs {}",
                    info.name,
                    array.data.len(),
                    array.shape,
                    array.shape.iter().product::<usize>()
                )));
            }
            slots[id] = Some(array);
        }
        for (n, node) in self.nodes.iter().enumerate() {
            let invalid = |detail: String| TfliteError::InvalidOp {
                path: self.path.clone(),
                index: node.index,
                op: node.name.clone(),
                detail,
            };
            let first = node.inputs[0];
            // In-place ops take their input when this node is its last reader.
            let owned = if node.kernel.works_in_place()
                && self.last_use[first] == n
                && node.inputs[1..].iter().all(|&i| i != first)
            {
                slots[first].take()
            } else {
                None
            };
            let start = Instant::now();
            let result = {
                let mut values = Vec::with_capacity(node.inputs.len());
                for (k, &id) in node.inputs.iter().enumerate() {
                    if k == 0 && owned.is_some() {
                        continue;
                    }
                    values.push(self.value(&slots, id).ok_or_else(|| {
                        invalid(format!(
                            "input tensor '{}' has no value",
                            self.tensor_names[id]
                        ))
                    })?);
                }
                node.kernel.run(&values, owned).map_err(invalid)?
            };
            on_node(node, start.elapsed());
            slots[node.output] = Some(result);
            for &id in &node.inputs {
                if self.last_use[id] == n {
                    slots[id] = None;
                }
            }
        }
        self.outputs
            .iter()
            .map(|&id| match self.value(&slots, id) {
                Some(a) => Ok(a.clone()),
                None => Err(bad(format!(
                    "output tensor '{}' was never computed",
                    self.tensor_names[id]
                ))),
            })
            .collect()
    }

    fn value<'a>(&'a self, slots: &'a [Option<Array>], id: usize) -> Option<&'a Array> {
        match &self.constants[id] {
            Some(Constant::Float(a)) => Some(a.as_ref()),
            Some(Constant::Int { .. }) => None,
            None => slots[id].as_ref(),
        }
    }

    /// Runs the model on f32 NHWC tensors (any float dtype is converted), one per input in
    /// the order of [`Self::inputs`]; returns the outputs in the model's order.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, TfliteError> {
        let candle = |source| TfliteError::Candle {
            path: self.path.clone(),
            source,
        };
        let arrays = inputs
            .iter()
            .map(|t| {
                let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Ok(Array::new(t.dims().to_vec(), data))
            })
            .collect::<Result<Vec<_>, candle_core::Error>>()
            .map_err(candle)?;
        self.run_arrays(arrays)?
            .into_iter()
            .map(|a| Tensor::from_vec(a.data, a.shape, &crate::device::host()).map_err(candle))
            .collect()
    }
}
