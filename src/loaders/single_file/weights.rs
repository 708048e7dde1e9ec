//! A renaming, patching weight source for candle's `VarBuilder`.
//!
//! [`WeightMap`] answers the diffusers names our models ask for with tensors read lazily from
//! weight files under other names (single-file checkpoints in the original LDM layout), with a
//! per-tensor [`Transform`], and with low-rank patches (LoRA) merged into the weight as it is
//! read. Models therefore load converted, LoRA-merged weights directly: no converted copy of
//! the checkpoint is built, and nothing of the LoRA remains at inference time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::keys::Transform;
use super::SingleFileError;

/// A weight file on disk: safetensors (memory-mapped) or a PyTorch pickle (`.ckpt`, `.pt`,
/// `.pth`, `.bin`; read with candle's restricted unpickler, which runs no code).
pub struct TensorFile {
    path: PathBuf,
    format: FileFormat,
    shapes: BTreeMap<String, Vec<usize>>,
}

enum FileFormat {
    Safetensors(MmapedSafetensors),
    Pickle(candle_core::pickle::PthTensors),
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFile")
            .field("path", &self.path)
            .field("tensors", &self.shapes.len())
            .finish()
    }
}

/// Whether a path names a PyTorch pickle rather than safetensors.
pub fn is_pickle_path(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin")
}

impl TensorFile {
    /// Opens a weight file by its extension. Pickles holding `{"state_dict": {...}}` (LDM
    /// checkpoints) are read from that entry.
    pub fn open(path: &Path) -> Result<Arc<Self>, SingleFileError> {
        Self::open_with_key(path, None)
    }

    /// [`Self::open`], reading a pickle's tensors from the dict entry `key`.
    pub fn open_with_key(path: &Path, key: Option<&str>) -> Result<Arc<Self>, SingleFileError> {
        let read = |source| SingleFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        if !path.is_file() {
            return Err(SingleFileError::NotFound(path.to_path_buf()));
        }
        let format = if is_pickle_path(path) {
            let pth = match key {
                Some(key) => candle_core::pickle::PthTensors::new(path, Some(key)),
                None => candle_core::pickle::PthTensors::new(path, Some("state_dict"))
                    .or_else(|_| candle_core::pickle::PthTensors::new(path, None)),
            };
            FileFormat::Pickle(pth.map_err(read)?)
        } else {
            // SAFETY: mapped read-only; like every mmap-based loader this assumes the file is
            // not truncated or rewritten while the model is being loaded.
            FileFormat::Safetensors(unsafe { MmapedSafetensors::new(path) }.map_err(read)?)
        };
        let shapes = match &format {
            FileFormat::Safetensors(st) => st
                .tensors()
                .into_iter()
                .map(|(name, view)| (name, view.shape().to_vec()))
                .collect(),
            FileFormat::Pickle(pth) => pth
                .tensor_infos()
                .iter()
                .map(|(name, info)| (name.clone(), info.layout.dims().to_vec()))
                .collect(),
        };
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            format,
            shapes,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name with its shape, sorted by name.
    pub fn shapes(&self) -> &BTreeMap<String, Vec<usize>> {
        &self.shapes
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// One tensor as stored (dtype unchanged).
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match &self.format {
            FileFormat::Safetensors(st) => st.load(name, device),
            FileFormat::Pickle(pth) => match pth.get(name)? {
                Some(t) => t.to_device(device),
                None => candle_core::bail!("{}: no tensor {name}", self.path.display()),
            },
        }
    }

    /// A scalar tensor's value (e.g. a LoRA `.alpha`).
    pub fn load_scalar(&self, name: &str) -> candle_core::Result<f64> {
        let t = self
            .load(name, &crate::device::host())?
            .to_dtype(DType::F64)?;
        let values = t.flatten_all()?.to_vec1::<f64>()?;
        match values.as_slice() {
            [v] => Ok(*v),
            _ => candle_core::bail!(
                "{}: {name} should hold one number, has {} values",
                self.path.display(),
                values.len()
            ),
        }
    }
}

/// Where one diffusers weight comes from.
#[derive(Debug, Clone)]
pub struct WeightSource {
    pub file: Arc<TensorFile>,
    /// The name inside `file`.
    pub key: String,
    pub transform: Transform,
    /// Shape after the transform (what the model sees).
    pub shape: Vec<usize>,
}

impl WeightSource {
    /// A source, its shape computed from the file; `None` if the transform does not fit it.
    pub fn new(file: &Arc<TensorFile>, key: &str, transform: Transform) -> Option<Self> {
        let stored = file.shapes().get(key)?;
        let shape = transformed_shape(stored, transform)?;
        Some(Self {
            file: Arc::clone(file),
            key: key.to_string(),
            transform,
            shape,
        })
    }

    /// The tensor in f32, transformed.
    pub fn load(&self, device: &Device) -> candle_core::Result<Tensor> {
        let t = self.file.load(&self.key, device)?.to_dtype(DType::F32)?;
        match self.transform {
            Transform::Identity => Ok(t),
            Transform::ConvToLinear => t.reshape(self.shape.as_slice()),
            Transform::Rows { start, len } => t.narrow(0, start, len)?.contiguous(),
        }
    }
}

fn transformed_shape(stored: &[usize], transform: Transform) -> Option<Vec<usize>> {
    match transform {
        Transform::Identity => Some(stored.to_vec()),
        Transform::ConvToLinear => {
            let mut shape = stored.to_vec();
            while shape.len() > 2 && shape.last() == Some(&1) {
                shape.pop();
            }
            Some(shape)
        }
        Transform::Rows { start, len } => {
            let rows = *stored.first()?;
            (start + len <= rows).then(|| {
                let mut shape = stored.to_vec();
                shape[0] = len;
                shape
            })
        }
    }
}

/// A change merged into a weight when it is read.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `W += scale · up @ down` (LoRA; conv weights flattened to `[out, in·kh·kw]`).
    LowRank {
        up: Tensor,
        down: Tensor,
        scale: f64,
        /// For error messages: which file and module the patch came from.
        origin: String,
    },
    /// `W += other` (difference ControlNets store their weights minus the base UNet's).
    Add(WeightSource),
}

impl Patch {
    fn apply(&self, weight: Tensor, name: &str) -> candle_core::Result<Tensor> {
        match self {
            Patch::LowRank {
                up,
                down,
                scale,
                origin,
            } => {
                let out = up.dim(0)?;
                let rank = up.elem_count() / out.max(1);
                let up = up.reshape((out, rank))?;
                let down = down.reshape((rank, down.elem_count() / rank.max(1)))?;
                let delta = up.matmul(&down)?;
                if delta.elem_count() != weight.elem_count() {
                    candle_core::bail!(
                        "{origin}: LoRA for {name} has {} values, the weight has shape {:?}",
                        delta.elem_count(),
                        weight.dims()
                    );
                }
                let delta = (delta.reshape(weight.shape())? * *scale)?;
                weight + delta
            }
            Patch::Add(source) => {
                let other = source.load(weight.device())?;
                if other.dims() != weight.dims() {
                    candle_core::bail!(
                        "{}: {} has shape {:?}, expected {:?} for {name}",
                        source.file.path().display(),
                        source.key,
                        other.dims(),
                        weight.dims()
                    );
                }
                weight + other
            }
        }
    }
}

/// diffusers weight names → sources and patches; a candle `SimpleBackend`.
#[derive(Debug, Clone, Default)]
pub struct WeightMap {
    /// What these weights are, for messages ("UNet of model.safetensors").
    label: String,
    entries: BTreeMap<String, WeightSource>,
    patches: HashMap<String, Vec<Patch>>,
}

impl WeightMap {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Default::default()
        }
    }

    /// All tensors of a diffusers-layout file under their own names.
    pub fn identity(label: impl Into<String>, file: &Arc<TensorFile>) -> Self {
        let mut map = Self::new(label);
        for key in file.shapes().keys() {
            if let Some(source) = WeightSource::new(file, key, Transform::Identity) {
                map.entries.insert(key.clone(), source);
            }
        }
        map
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn insert(&mut self, name: String, source: WeightSource) {
        self.entries.insert(name, source);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn source(&self, name: &str) -> Option<&WeightSource> {
        self.entries.get(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|s| s.shape.as_slice())
    }

    /// Number of patches waiting to be merged (for tests and reports).
    pub fn patch_count(&self) -> usize {
        self.patches.values().map(Vec::len).sum()
    }

    /// Queues `patch` for weight `name`, which must exist.
    pub fn add_patch(&mut self, name: &str, patch: Patch) -> Result<(), SingleFileError> {
        if !self.entries.contains_key(name) {
            return Err(SingleFileError::UnknownWeight {
                weights: self.label.clone(),
                name: name.to_string(),
            });
        }
        self.patches
            .entry(name.to_string())
            .or_default()
            .push(patch);
        Ok(())
    }

    /// The weight `name` in f32, with its patches merged.
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let Some(source) = self.entries.get(name) else {
            candle_core::bail!("{}: no weight named {name}", self.label);
        };
        let mut weight = source.load(device)?;
        for patch in self.patches.get(name).into_iter().flatten() {
            weight = patch.apply(weight, name)?;
        }
        Ok(weight)
    }

    /// A `VarBuilder` over these weights (f32).
    pub fn into_var_builder(self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), DType::F32, device.clone())
    }
}

impl SimpleBackend for WeightMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, device)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "{}: weight {name} has shape {:?}, the model expects {:?} (does the model config match the checkpoint?)",
                self.label,
                tensor.dims(),
                shape.dims()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.load(name, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformed_shapes() {
        assert_eq!(
            transformed_shape(&[8, 8, 1, 1], Transform::ConvToLinear),
            Some(vec![8, 8])
        );
        assert_eq!(
            transformed_shape(&[24, 8], Transform::Rows { start: 16, len: 8 }),
            Some(vec![8, 8])
        );
        assert_eq!(
            transformed_shape(&[24, 8], Transform::Rows { start: 20, len: 8 }),
            None
        );
    }

    #[test]
    fn low_rank_patch_adds_scaled_product() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let up = Tensor::new(&[[1f32], [2.]], &dev).unwrap();
        let down = Tensor::new(&[[1f32, 0., -1.]], &dev).unwrap();
        let patch = Patch::LowRank {
            up,
            down,
            scale: 0.5,
            origin: "test".into(),
        };
        let out: Vec<Vec<f32>> = patch.apply(w, "w").unwrap().to_vec2().unwrap();
        assert_eq!(out, vec![vec![0.5, 0.0, -0.5], vec![1.0, 0.0, -1.0]]);
    }
}
