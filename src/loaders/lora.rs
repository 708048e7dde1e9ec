//! LoRA files as users have them, merged into the weights at load time.
//!
//! Formats (UNet and CLIP text encoder, several files at once, each with its own strengths):
//! * kohya / A1111 (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`
//!   `.lora_down.weight` / `.lora_up.weight` / `.alpha`; `lora_te_text_model_encoder_layers_0_`
//!   `self_attn_q_proj...`), including the variant naming the original LDM modules
//!   (`lora_unet_input_blocks_1_1_...`) and conv layers (LoCon: resnet convs, up/downsamplers);
//! * diffusers / PEFT (`unet.<module>.lora_A.weight` / `lora_B.weight`,
//!   `text_encoder.<module>...`) and diffusers' older attention-processor names
//!   (`...attn1.processor.to_q_lora.down.weight`, `...q_proj.lora_linear_layer.up.weight`).
//!
//! Each LoRA module adds `strength · (alpha / rank) · up @ down` to its weight (alpha defaults
//! to the rank, i.e. scale 1, as in kohya's and diffusers' loaders), computed once when the
//! weight is read ([`WeightMap`] patches): inference runs on plain merged weights, with no extra
//! memory or time per step. This is A1111's and diffusers' `fuse_lora` arithmetic; `strength`
//! is A1111's `<lora:name:unet_strength:te_strength>` / ComfyUI LoraLoader's
//! `strength_model` / `strength_clip`.
//!
//! Where a LoRA comes from ([`LoraSource`]): a file or folder on disk, or a file of a Hugging
//! Face hub repo (`owner/name` for its `pytorch_lora_weights.safetensors`, as diffusers'
//! `load_lora_weights` reads a repo, or `owner/name/file.safetensors`), fetched through the
//! hub cache like the other models.
//!
//! Module names in kohya files lose their dots (`to_q` vs `to.q` is ambiguous), so they are
//! matched against the model's own module names, flattened the same way, rather than parsed.
//!
//! Not supported (reported as errors naming the key): LyCORIS LoHa (`hada_w1_a`), LoKr
//! (`lokr_w1`), Tucker-decomposed LoCon (`lora_mid`), DoRA (`dora_scale`,
//! `lora_magnitude_vector`), SDXL LoRAs (`lora_te1_`, `lora_te2_`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::DType;

use crate::loaders::single_file::keys::unet_diffusers_to_ldm;
use crate::loaders::single_file::{Patch, SingleFileError, TensorFile, WeightMap};
use crate::loaders::source::{is_hub_name_part, resolve_hub_file, HubOptions, LoadError};

/// Errors of reading or applying LoRA files.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error(transparent)]
    File(#[from] SingleFileError),
    #[error("LoRA {path}: {key}: {message}")]
    Unsupported {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("LoRA {path}: {key} has no matching {missing}")]
    Incomplete {
        path: PathBuf,
        key: String,
        missing: String,
    },
    #[error("LoRA {path}: {count} module(s) not found in the {component}, e.g. {examples} (is it a LoRA for another model family, e.g. SDXL?)")]
    UnknownModules {
        path: PathBuf,
        component: &'static str,
        count: usize,
        examples: String,
    },
    #[error("LoRA {path}: {key}: {message}")]
    Tensor {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("LoRA {path} holds no LoRA weights")]
    Empty { path: PathBuf },
}

/// One LoRA as a preset names it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    /// Strength on the UNet (`strength_model`).
    pub unet_strength: f64,
    /// Strength on the text encoder (`strength_clip`).
    pub text_encoder_strength: f64,
}

/// The file diffusers' `load_lora_weights(repo)` reads from a repo or folder when no
/// `weight_name` is given.
pub const LORA_WEIGHT_NAME: &str = "pytorch_lora_weights.safetensors";

/// Extensions of LoRA weight files ([`TensorFile`] reads safetensors and pickles).
const LORA_EXTENSIONS: [&str; 5] = ["safetensors", "ckpt", "pt", "pth", "bin"];

fn has_lora_extension(name: &str) -> bool {
    Path::new(name).extension().is_some_and(|e| {
        LORA_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
    })
}

/// Where a preset's `loras[i].path` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoraSource {
    /// A file on disk (or a folder holding [`LORA_WEIGHT_NAME`]), or a path that does not
    /// exist and is clearly no hub id (reported missing when it is opened).
    Local(PathBuf),
    /// A file of a Hugging Face hub repo: `owner/name[@revision]` means its
    /// [`LORA_WEIGHT_NAME`] (as diffusers' `load_lora_weights("owner/name")` reads it);
    /// `owner/name[@revision]/dir/file.safetensors` names the file.
    Hub {
        repo: String,
        revision: String,
        file: String,
    },
}

impl LoraSource {
    /// Existing paths win. A missing path is read as a hub id unless it is absolute, starts
    /// with `./`, `../` or `~`, its first folder exists here, or (`owner/name` form) it
    /// names a weight file (`loras/x.safetensors`).
    pub fn parse(path: &Path) -> Self {
        let local = || Self::Local(path.to_path_buf());
        if path.exists() {
            return local();
        }
        let Some(text) = path.to_str() else {
            return local();
        };
        if path.is_absolute()
            || text.starts_with("./")
            || text.starts_with("../")
            || text.starts_with('~')
            || text.contains('\\')
        {
            return local();
        }
        let parts: Vec<&str> = text.split('/').collect();
        let [owner, name_rev, rest @ ..] = parts.as_slice() else {
            return local();
        };
        let (name, revision) = match name_rev.split_once('@') {
            Some((name, rev)) if !rev.is_empty() => (name, rev),
            Some(_) => return local(),
            None => (*name_rev, "main"),
        };
        if !is_hub_name_part(owner) || !is_hub_name_part(name) || Path::new(owner).is_dir() {
            return local();
        }
        let file = if rest.is_empty() {
            if has_lora_extension(name) {
                return local();
            }
            LORA_WEIGHT_NAME.to_string()
        } else {
            let usable = rest
                .iter()
                .all(|p| !p.is_empty() && *p != "." && *p != "..");
            let last = rest.last().copied().unwrap_or_default();
            if !usable || !has_lora_extension(last) {
                return local();
            }
            rest.join("/")
        };
        Self::Hub {
            repo: format!("{owner}/{name}"),
            revision: revision.to_string(),
            file,
        }
    }

    /// The LoRA's file on disk: a local file as given (a folder: its
    /// [`LORA_WEIGHT_NAME`]), a hub file from the cache or downloaded through `hub`.
    pub fn resolve(&self, hub: &HubOptions) -> Result<PathBuf, LoadError> {
        match self {
            Self::Local(path) => {
                let inside = path.join(LORA_WEIGHT_NAME);
                Ok(if path.is_dir() && inside.is_file() {
                    inside
                } else {
                    path.clone()
                })
            }
            Self::Hub {
                repo,
                revision,
                file,
            } => resolve_hub_file(repo, revision, file, hub),
        }
    }
}

/// Which model a LoRA module patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    Unet,
    TextEncoder,
}

impl LoraTarget {
    fn describe(self) -> &'static str {
        match self {
            LoraTarget::Unet => "UNet",
            LoraTarget::TextEncoder => "text encoder",
        }
    }
}

/// How a module is named in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleName {
    /// kohya's flattened name (after `lora_unet_` / `lora_te_`).
    Flat(String),
    /// A dotted diffusers / transformers module path.
    Dotted(String),
}

/// One low-rank pair found in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModule {
    pub target: LoraTarget,
    pub name: ModuleName,
    pub down_key: String,
    pub up_key: String,
    pub alpha_key: Option<String>,
}

/// A parsed LoRA file.
#[derive(Debug, Clone)]
pub struct LoraFile {
    file: Arc<TensorFile>,
    modules: Vec<LoraModule>,
}

/// The file's `(module, part)` for one tensor key, or `None` for keys that are not LoRA data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    Alpha,
}

/// Splits a key into (target, module name, part). Pure.
fn classify(key: &str) -> Result<Option<(LoraTarget, ModuleName, Part)>, String> {
    for marker in ["hada_w", "hada_t", "lokr_w", "lokr_t"] {
        if key.contains(marker) {
            return Err("LyCORIS LoHa/LoKr weights are not supported (only LoRA / LoCon)".into());
        }
    }
    if key.contains("lora_mid") {
        return Err("Tucker-decomposed LoCon (lora_mid) is not supported".into());
    }
    if key.contains("dora_scale") || key.contains("lora_magnitude_vector") {
        return Err("DoRA weights are not supported".into());
    }
    if key.starts_with("lora_te1_") || key.starts_with("lora_te2_") {
        return Err(
            "an SDXL text-encoder LoRA (lora_te1_/lora_te2_) cannot apply to SD1.x/2.x".into(),
        );
    }
    // kohya
    for (prefix, target) in [
        ("lora_unet_", LoraTarget::Unet),
        ("lora_te_", LoraTarget::TextEncoder),
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            let (module, suffix) = rest
                .split_once('.')
                .ok_or_else(|| "a kohya key without a '.' suffix".to_string())?;
            let part = match suffix {
                "lora_down.weight" => Part::Down,
                "lora_up.weight" => Part::Up,
                "alpha" => Part::Alpha,
                other => return Err(format!("unknown kohya LoRA tensor .{other}")),
            };
            return Ok(Some((target, ModuleName::Flat(module.to_string()), part)));
        }
    }
    // diffusers / PEFT
    let (target, rest) = if let Some(rest) = key.strip_prefix("unet.") {
        (LoraTarget::Unet, rest)
    } else if let Some(rest) = key.strip_prefix("text_encoder.") {
        (LoraTarget::TextEncoder, rest)
    } else if let Some(rest) = key.strip_prefix("base_model.model.") {
        (LoraTarget::Unet, rest)
    } else {
        return Ok(None);
    };
    let suffixes: [(&str, Part); 9] = [
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
        (".lora_linear_layer.down.weight", Part::Down),
        (".lora_linear_layer.up.weight", Part::Up),
        ("_lora.down.weight", Part::Down),
        ("_lora.up.weight", Part::Up),
        (".alpha", Part::Alpha),
    ];
    for (suffix, part) in suffixes {
        if let Some(module) = rest.strip_suffix(suffix) {
            return Ok(Some((
                target,
                ModuleName::Dotted(legacy_processor_name(module)),
                part,
            )));
        }
    }
    Err("not a LoRA tensor this loader knows".into())
}

/// diffusers' old attention-processor names → module paths
/// (`attn1.processor.to_q` → `attn1.to_q`, `processor.to_out` → `to_out.0`).
fn legacy_processor_name(module: &str) -> String {
    match module.split_once(".processor.") {
        Some((attn, proj)) => {
            let proj = if proj == "to_out" { "to_out.0" } else { proj };
            format!("{attn}.{proj}")
        }
        None => module.to_string(),
    }
}

impl LoraFile {
    /// Reads a LoRA file (`.safetensors`, or a pickle `.pt`/`.bin`/`.ckpt`).
    pub fn open(path: &Path) -> Result<Self, LoraError> {
        let file = TensorFile::open_with_key(path, None)?;
        let mut groups: BTreeMap<(LoraTarget, String, bool), [Option<String>; 3]> = BTreeMap::new();
        for key in file.shapes().keys() {
            let parsed = classify(key).map_err(|message| LoraError::Unsupported {
                path: path.to_path_buf(),
                key: key.clone(),
                message,
            })?;
            let Some((target, name, part)) = parsed else {
                return Err(LoraError::Unsupported {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    message: "not a LoRA tensor this loader knows".into(),
                });
            };
            let (text, flat) = match name {
                ModuleName::Flat(s) => (s, true),
                ModuleName::Dotted(s) => (s, false),
            };
            let slot = match part {
                Part::Down => 0,
                Part::Up => 1,
                Part::Alpha => 2,
            };
            groups.entry((target, text, flat)).or_default()[slot] = Some(key.clone());
        }
        let mut modules = Vec::new();
        for ((target, text, flat), [down, up, alpha]) in groups {
            let incomplete = |have: &Option<String>, missing: &str| LoraError::Incomplete {
                path: path.to_path_buf(),
                key: have.clone().unwrap_or_else(|| text.clone()),
                missing: missing.to_string(),
            };
            let down_key = down
                .clone()
                .ok_or_else(|| incomplete(&up, "down (A) weight"))?;
            let up_key = up.ok_or_else(|| incomplete(&down, "up (B) weight"))?;
            modules.push(LoraModule {
                target,
                name: if flat {
                    ModuleName::Flat(text)
                } else {
                    ModuleName::Dotted(text)
                },
                down_key,
                up_key,
                alpha_key: alpha,
            });
        }
        if modules.is_empty() {
            return Err(LoraError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { file, modules })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn modules(&self) -> &[LoraModule] {
        &self.modules
    }

    /// Queues this LoRA's patches on `weights` (the `target` model's weights) with
    /// `strength`; returns how many modules were patched. `unet_layers_per_block` is needed to
    /// read kohya names in the LDM layout (UNet only).
    pub fn apply(
        &self,
        target: LoraTarget,
        weights: &mut WeightMap,
        strength: f64,
        unet_layers_per_block: Option<usize>,
    ) -> Result<usize, LoraError> {
        let modules: Vec<&LoraModule> =
            self.modules.iter().filter(|m| m.target == target).collect();
        if modules.is_empty() || strength == 0.0 {
            return Ok(0);
        }
        let index = ModuleIndex::build(target, weights, unet_layers_per_block);
        let mut unknown = Vec::new();
        let mut applied = 0;
        for module in modules {
            let Some(weight_name) = index.resolve(&module.name) else {
                unknown.push(match &module.name {
                    ModuleName::Flat(s) | ModuleName::Dotted(s) => s.clone(),
                });
                continue;
            };
            let patch = self.patch(module, strength)?;
            weights.add_patch(&weight_name, patch)?;
            applied += 1;
        }
        if !unknown.is_empty() {
            return Err(LoraError::UnknownModules {
                path: self.path().to_path_buf(),
                component: target.describe(),
                count: unknown.len(),
                examples: unknown.into_iter().take(3).collect::<Vec<_>>().join(", "),
            });
        }
        Ok(applied)
    }

    fn patch(&self, module: &LoraModule, strength: f64) -> Result<Patch, LoraError> {
        let tensor_err = |key: &str, e: candle_core::Error| LoraError::Tensor {
            path: self.path().to_path_buf(),
            key: key.to_string(),
            message: e.to_string(),
        };
        let load = |key: &str| {
            self.file
                .load(key, &crate::device::host())
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| tensor_err(key, e))
        };
        let down = load(&module.down_key)?;
        let up = load(&module.up_key)?;
        let rank = down.dims().first().copied().unwrap_or(0);
        let up_rank = up.dims().get(1).copied().unwrap_or(0);
        if rank == 0 || rank != up_rank {
            return Err(LoraError::Tensor {
                path: self.path().to_path_buf(),
                key: module.down_key.clone(),
                message: format!(
                    "down {:?} and up {:?} do not share a rank",
                    down.dims(),
                    up.dims()
                ),
            });
        }
        let alpha = match &module.alpha_key {
            Some(key) => self.file.load_scalar(key).map_err(|e| tensor_err(key, e))?,
            None => rank as f64,
        };
        Ok(Patch::LowRank {
            up,
            down,
            scale: strength * alpha / rank as f64,
            origin: format!("{} ({})", self.path().display(), module.down_key),
        })
    }
}

/// The model's module names under every spelling a LoRA file may use.
struct ModuleIndex {
    by_flat: HashMap<String, String>,
    by_dotted: HashMap<String, String>,
}

impl ModuleIndex {
    fn build(
        target: LoraTarget,
        weights: &WeightMap,
        unet_layers_per_block: Option<usize>,
    ) -> Self {
        let mut by_flat = HashMap::new();
        let mut by_dotted = HashMap::new();
        let names: Vec<&str> = weights.names().collect();
        let up_block_has_attention = |b: usize| {
            let prefix = format!("up_blocks.{b}.attentions.");
            names.iter().any(|n| n.starts_with(&prefix))
        };
        for name in &names {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            let mut spellings = vec![module.to_string()];
            match target {
                LoraTarget::Unet => {
                    if let Some(layers) = unet_layers_per_block {
                        if let Some(ldm) =
                            unet_diffusers_to_ldm(name, layers, up_block_has_attention)
                        {
                            if let Some(ldm_module) = ldm.strip_suffix(".weight") {
                                spellings.push(ldm_module.to_string());
                            }
                        }
                    }
                }
                LoraTarget::TextEncoder => {
                    // Text encoders saved by transformers >= 5.6 lack the `text_model.` level
                    // that LoRA files always name.
                    if !module.starts_with("text_model.") {
                        spellings.push(format!("text_model.{module}"));
                    }
                }
            }
            for spelling in spellings {
                by_flat.insert(spelling.replace('.', "_"), name.to_string());
                by_dotted.insert(spelling, name.to_string());
            }
        }
        Self { by_flat, by_dotted }
    }

    fn resolve(&self, name: &ModuleName) -> Option<String> {
        match name {
            ModuleName::Flat(s) => self.by_flat.get(s).cloned(),
            ModuleName::Dotted(s) => self.by_dotted.get(s).cloned(),
        }
    }
}

/// Applies several LoRAs, each with its own strengths, to a UNet's and a text encoder's
/// weights. Returns the number of patched modules per LoRA.
pub fn apply_loras(
    specs: &[LoraSpec],
    unet: &mut WeightMap,
    unet_layers_per_block: Option<usize>,
    text_encoder: &mut WeightMap,
) -> Result<Vec<usize>, LoraError> {
    specs
        .iter()
        .map(|spec| {
            let file = LoraFile::open(&spec.path)?;
            let unet_count = file.apply(
                LoraTarget::Unet,
                unet,
                spec.unet_strength,
                unet_layers_per_block,
            )?;
            let te_count = file.apply(
                LoraTarget::TextEncoder,
                text_encoder,
                spec.text_encoder_strength,
                None,
            )?;
            Ok(unet_count + te_count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo: &str, revision: &str, file: &str) -> LoraSource {
        LoraSource::Hub {
            repo: repo.into(),
            revision: revision.into(),
            file: file.into(),
        }
    }

    #[test]
    fn lora_sources_are_hub_ids_or_paths() {
        let parse = |s: &str| LoraSource::parse(Path::new(s));
        // A repo id means its pytorch_lora_weights.safetensors, as diffusers reads it.
        assert_eq!(
            parse("latent-consistency/lcm-lora-sdv1-5"),
            hub(
                "latent-consistency/lcm-lora-sdv1-5",
                "main",
                "pytorch_lora_weights.safetensors"
            )
        );
        assert_eq!(
            parse("ByteDance/Hyper-SD/Hyper-SD15-8steps-lora.safetensors"),
            hub(
                "ByteDance/Hyper-SD",
                "main",
                "Hyper-SD15-8steps-lora.safetensors"
            )
        );
        assert_eq!(
            parse("owner/name@v2/sub/dir/x.safetensors"),
            hub("owner/name", "v2", "sub/dir/x.safetensors")
        );
        assert_eq!(
            parse("owner/name@fp16"),
            hub("owner/name", "fp16", LORA_WEIGHT_NAME)
        );
        // Paths stay paths: existing ones, relative and absolute ones, file names, folders
        // that exist here, anything that is no valid repo id or names no weight file.
        let manifest = env!("CARGO_MANIFEST_DIR");
        let fixture = format!("{manifest}/tests/fixtures/lora/lora_a_kohya.safetensors");
        for path in [
            fixture.as_str(),
            "loras/ghibli.safetensors",
            "ghibli.safetensors",
            "./owner/name",
            "../owner/name/x.safetensors",
            "/abs/owner/name",
            "~/loras/x.safetensors",
            "src/loaders/x.safetensors",
            "owner/name/readme.md",
            "owner/name/",
            "owner/name/../x.safetensors",
            "owner/name@/x.safetensors",
            ".hidden/name",
            "justaname",
        ] {
            assert_eq!(
                parse(path),
                LoraSource::Local(PathBuf::from(path)),
                "{path}"
            );
        }
    }

    #[test]
    fn a_local_lora_resolves_without_the_hub() {
        let hub_options = HubOptions {
            offline: true,
            cache_dir: None,
            progress: false,
            endpoint: None,
            token: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        assert_eq!(
            LoraSource::parse(&path).resolve(&hub_options).unwrap(),
            path
        );
        // A folder as `huggingface-cli download --local-dir` leaves it: its diffusers file.
        std::fs::write(dir.path().join(LORA_WEIGHT_NAME), b"").unwrap();
        assert_eq!(
            LoraSource::parse(dir.path()).resolve(&hub_options).unwrap(),
            dir.path().join(LORA_WEIGHT_NAME)
        );
    }

    #[test]
    fn an_uncached_hub_lora_offline_is_a_missing_file_with_its_download() {
        let cache = tempfile::tempdir().unwrap();
        let hub_options = HubOptions {
            offline: true,
            cache_dir: Some(cache.path().to_path_buf()),
            progress: false,
            endpoint: None,
            token: None,
        };
        let err = LoraSource::parse(Path::new("latent-consistency/lcm-lora-sdv1-5"))
            .resolve(&hub_options)
            .unwrap_err();
        assert!(matches!(err, LoadError::MissingHubFile { .. }), "{err:?}");
        let text = err.to_string();
        for needle in [
            "1 model file(s) missing for latent-consistency/lcm-lora-sdv1-5:",
            "  - pytorch_lora_weights.safetensors\n",
            "HF_HUB_OFFLINE",
            "huggingface-cli download latent-consistency/lcm-lora-sdv1-5 pytorch_lora_weights.safetensors",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
    }

    #[test]
    fn classifies_kohya_keys() {
        assert_eq!(
            classify("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight").unwrap(),
            Some((
                LoraTarget::Unet,
                ModuleName::Flat("down_blocks_0_attentions_0_proj_in".into()),
                Part::Down
            ))
        );
        assert_eq!(
            classify("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha").unwrap(),
            Some((
                LoraTarget::TextEncoder,
                ModuleName::Flat("text_model_encoder_layers_0_mlp_fc1".into()),
                Part::Alpha
            ))
        );
        assert!(classify("lora_unet_x.hada_w1_a").is_err());
        assert!(classify("lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha").is_err());
        assert!(classify("lora_unet_x.dora_scale").is_err());
    }

    #[test]
    fn classifies_diffusers_keys() {
        assert_eq!(
            classify("unet.mid_block.attentions.0.proj_out.lora_B.weight").unwrap(),
            Some((
                LoraTarget::Unet,
                ModuleName::Dotted("mid_block.attentions.0.proj_out".into()),
                Part::Up
            ))
        );
        assert_eq!(
            classify("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight")
                .unwrap(),
            Some((
                LoraTarget::Unet,
                ModuleName::Dotted(
                    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0".into()
                ),
                Part::Down
            ))
        );
        assert_eq!(
            classify("text_encoder.text_model.encoder.layers.1.self_attn.k_proj.lora_linear_layer.up.weight")
                .unwrap(),
            Some((
                LoraTarget::TextEncoder,
                ModuleName::Dotted("text_model.encoder.layers.1.self_attn.k_proj".into()),
                Part::Up
            ))
        );
        assert_eq!(
            classify("model.diffusion_model.out.2.weight").unwrap(),
            None
        );
    }
}
