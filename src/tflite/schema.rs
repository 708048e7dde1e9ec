//! The parts of TFLite's `schema.fbs` (schema version 3) that the interpreter reads, copied
//! out of the flatbuffer into plain Rust values.
//!
//! Field slots follow the declaration order in `schema.fbs` (a union field takes two slots:
//! `<name>_type` then `<name>`). Only the tables reachable from the ops we run are read;
//! operator options are decoded per operator kind in [`crate::tflite::ops`].

use super::flatbuffer::{self, Table};

/// Element types of `TensorType` that can appear in the supported models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    Float32,
    Float16,
    Int32,
    UInt8,
    Int64,
    Int8,
    /// Any other `TensorType` value, kept for error messages.
    Other(i8),
}

impl TensorType {
    fn from_schema(value: i8) -> Self {
        match value {
            0 => Self::Float32,
            1 => Self::Float16,
            2 => Self::Int32,
            3 => Self::UInt8,
            4 => Self::Int64,
            9 => Self::Int8,
            other => Self::Other(other),
        }
    }
}

/// `DimensionMetadata`: one level of a sparse tensor's storage, in traversal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimensionMetadata {
    /// Every coordinate is stored implicitly.
    Dense { size: usize },
    /// Compressed sparse row: `segments[p]..segments[p + 1]` index into `indices` for parent `p`.
    SparseCsr {
        segments: Vec<usize>,
        indices: Vec<usize>,
    },
}

/// `SparsityParameters` (TACO-style sparse storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparsity {
    pub traversal_order: Vec<usize>,
    pub block_map: Vec<usize>,
    pub dim_metadata: Vec<DimensionMetadata>,
}

/// `QuantizationParameters`, only what DEQUANTIZE of integer tensors needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Quantization {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub quantized_dimension: usize,
}

#[derive(Debug, Clone)]
pub struct TensorDef {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: TensorType,
    /// Raw little-endian constant data (empty for activations).
    pub data: Vec<u8>,
    pub sparsity: Option<Sparsity>,
    pub quantization: Option<Quantization>,
}

/// The operator kind: a builtin code (`BuiltinOperator`) or a custom op's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpCode {
    Builtin(i32),
    Custom(String),
}

#[derive(Debug, Clone)]
pub struct OperatorDef<'a> {
    pub code: OpCode,
    /// Tensor indices; `None` for an omitted optional input (-1 in the file).
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
    /// The `builtin_options` union value, decoded per op kind later.
    pub options: Option<Table<'a>>,
}

#[derive(Debug, Clone)]
pub struct ModelDef<'a> {
    pub tensors: Vec<TensorDef>,
    pub operators: Vec<OperatorDef<'a>>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

type Result<T> = flatbuffer::Result<T>;

fn bad<T>(field: &'static str, reason: &'static str) -> Result<T> {
    Err(flatbuffer::FlatbufferError {
        field,
        offset: 0,
        reason,
    })
}

fn index(value: i32, len: usize, field: &'static str) -> Result<usize> {
    if value < 0 || value as usize >= len {
        return bad(field, "index out of range");
    }
    Ok(value as usize)
}

fn non_negative(values: Vec<i32>, field: &'static str) -> Result<Vec<usize>> {
    values
        .into_iter()
        .map(|v| {
            if v < 0 {
                bad(field, "negative value")
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// A `SparseIndexVector` union (Int32Vector / Uint16Vector / Uint8Vector, each `values` at slot 0).
fn sparse_index_vector(table: &Table, type_slot: usize, field: &'static str) -> Result<Vec<usize>> {
    let kind = table.scalar::<u8>(type_slot, 0, field)?;
    let Some(vector) = table.table(type_slot + 1, field)? else {
        return bad(field, "missing index vector");
    };
    match kind {
        1 => non_negative(vector.scalars::<i32>(0, field)?, field),
        2 => Ok(vector
            .scalars::<u16>(0, field)?
            .into_iter()
            .map(usize::from)
            .collect()),
        3 => Ok(vector
            .scalars::<u8>(0, field)?
            .into_iter()
            .map(usize::from)
            .collect()),
        _ => bad(field, "unknown SparseIndexVector type"),
    }
}

fn sparsity(table: &Table) -> Result<Sparsity> {
    let traversal_order = non_negative(
        table.scalars::<i32>(0, "SparsityParameters.traversal_order")?,
        "SparsityParameters.traversal_order",
    )?;
    let block_map = non_negative(
        table.scalars::<i32>(1, "SparsityParameters.block_map")?,
        "SparsityParameters.block_map",
    )?;
    let dim_metadata = table
        .tables(2, "SparsityParameters.dim_metadata")?
        .iter()
        .map(
            |dim| match dim.scalar::<i8>(0, 0, "DimensionMetadata.format")? {
                0 => {
                    let size = dim.scalar::<i32>(1, 0, "DimensionMetadata.dense_size")?;
                    if size < 0 {
                        return bad("DimensionMetadata.dense_size", "negative value");
                    }
                    Ok(DimensionMetadata::Dense {
                        size: size as usize,
                    })
                }
                1 => Ok(DimensionMetadata::SparseCsr {
                    segments: sparse_index_vector(dim, 2, "DimensionMetadata.array_segments")?,
                    indices: sparse_index_vector(dim, 4, "DimensionMetadata.array_indices")?,
                }),
                _ => bad("DimensionMetadata.format", "unknown DimensionType"),
            },
        )
        .collect::<Result<Vec<_>>>()?;
    Ok(Sparsity {
        traversal_order,
        block_map,
        dim_metadata,
    })
}

fn quantization(table: &Table) -> Result<Quantization> {
    Ok(Quantization {
        scale: table.scalars::<f32>(2, "QuantizationParameters.scale")?,
        zero_point: table.scalars::<i64>(3, "QuantizationParameters.zero_point")?,
        quantized_dimension: index(
            table.scalar::<i32>(6, 0, "QuantizationParameters.quantized_dimension")?,
            usize::MAX >> 1,
            "QuantizationParameters.quantized_dimension",
        )?,
    })
}

/// A `Buffer`'s bytes: inline `data`, or (models over 2 GB) an `offset`/`size` range of the file.
fn buffer_bytes<'a>(file: &'a [u8], buffer: &Table<'a>) -> Result<&'a [u8]> {
    if let Some(data) = buffer.bytes(0, "Buffer.data")? {
        return Ok(data);
    }
    let offset = buffer.scalar::<u64>(1, 0, "Buffer.offset")? as usize;
    let size = buffer.scalar::<u64>(2, 0, "Buffer.size")? as usize;
    if offset <= 1 {
        return Ok(&[]);
    }
    match offset
        .checked_add(size)
        .and_then(|end| file.get(offset..end))
    {
        Some(bytes) => Ok(bytes),
        None => bad("Buffer.offset", "range outside the file"),
    }
}

/// Reads the first subgraph of a `.tflite` file (identifier `TFL3`).
pub fn read_model(file: &[u8]) -> Result<ModelDef<'_>> {
    let model = flatbuffer::root(file, b"TFL3")?;
    let version = model.scalar::<u32>(0, 0, "Model.version")?;
    if version != 3 {
        return bad("Model.version", "unsupported schema version (expected 3)");
    }
    let codes = model
        .tables(1, "Model.operator_codes")?
        .iter()
        .map(|code| {
            // builtin_code (slot 3) supersedes the byte-sized deprecated_builtin_code (slot 0).
            let deprecated =
                code.scalar::<i8>(0, 0, "OperatorCode.deprecated_builtin_code")? as i32;
            let builtin = code.scalar::<i32>(3, 0, "OperatorCode.builtin_code")?;
            let builtin = builtin.max(deprecated);
            if builtin == 32 {
                let name = code
                    .string(1, "OperatorCode.custom_code")?
                    .unwrap_or_default();
                Ok(OpCode::Custom(name))
            } else {
                Ok(OpCode::Builtin(builtin))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let buffers = model.tables(4, "Model.buffers")?;
    let subgraphs = model.tables(2, "Model.subgraphs")?;
    let Some(graph) = subgraphs.first() else {
        return bad("Model.subgraphs", "model has no subgraph");
    };

    let tensors = graph
        .tables(0, "SubGraph.tensors")?
        .iter()
        .map(|t| {
            let buffer = t.scalar::<u32>(2, 0, "Tensor.buffer")? as usize;
            let data = match buffers.get(buffer) {
                Some(b) => buffer_bytes(file, b)?.to_vec(),
                None => return bad("Tensor.buffer", "buffer index out of range"),
            };
            Ok(TensorDef {
                shape: non_negative(t.scalars::<i32>(0, "Tensor.shape")?, "Tensor.shape")?,
                dtype: TensorType::from_schema(t.scalar::<i8>(1, 0, "Tensor.type")?),
                name: t.string(3, "Tensor.name")?.unwrap_or_default(),
                quantization: t
                    .table(4, "Tensor.quantization")?
                    .map(|q| quantization(&q))
                    .transpose()?,
                sparsity: t
                    .table(6, "Tensor.sparsity")?
                    .map(|s| sparsity(&s))
                    .transpose()?,
                data,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let n = tensors.len();
    let tensor_list = |values: Vec<i32>, field| {
        values
            .into_iter()
            .map(|v| index(v, n, field))
            .collect::<Result<Vec<_>>>()
    };

    let operators = graph
        .tables(3, "SubGraph.operators")?
        .iter()
        .map(|op| {
            let code_index = op.scalar::<u32>(0, 0, "Operator.opcode_index")? as usize;
            let Some(code) = codes.get(code_index) else {
                return bad("Operator.opcode_index", "index out of range");
            };
            let inputs = op
                .scalars::<i32>(1, "Operator.inputs")?
                .into_iter()
                .map(|v| {
                    if v < 0 {
                        Ok(None)
                    } else {
                        index(v, n, "Operator.inputs").map(Some)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(OperatorDef {
                code: code.clone(),
                inputs,
                outputs: tensor_list(
                    op.scalars::<i32>(2, "Operator.outputs")?,
                    "Operator.outputs",
                )?,
                options: op.table(4, "Operator.builtin_options")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    Ok(ModelDef {
        inputs: tensor_list(
            graph.scalars::<i32>(1, "SubGraph.inputs")?,
            "SubGraph.inputs",
        )?,
        outputs: tensor_list(
            graph.scalars::<i32>(2, "SubGraph.outputs")?,
            "SubGraph.outputs",
        )?,
        tensors,
        operators,
    })
}
