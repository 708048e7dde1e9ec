//! Finding model files: a model source (local diffusers folder or Hugging Face hub id) is
//! resolved into concrete config and weight paths per component, and weights are opened as
//! memory-mapped f32 `VarBuilder`s.
//!
//! Weights: fp32 `diffusion_pytorch_model.safetensors` / `model.safetensors` is preferred, the
//! `.fp16.safetensors` variant is the fallback (converted to f32 on load). Hub ids go through
//! hf-hub with its cache (`HF_HUB_CACHE`, `HF_HOME`, `~/.cache/huggingface/hub`) and progress
//! bars; `HF_HUB_OFFLINE=1` only looks in the cache. Any file that can be neither found nor
//! fetched ends up in one [`LoadError::MissingFiles`] listing all of them and how to get them.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// A part of a diffusers pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    Tokenizer,
    /// A ControlNet repo/folder: `config.json` + weights at its root.
    ControlNet,
}

impl Component {
    /// The SD1.5 set: everything `StableDiffusionPipeline` needs to run.
    pub const SD_PIPELINE: [Component; 4] = [
        Component::Unet,
        Component::Vae,
        Component::TextEncoder,
        Component::Tokenizer,
    ];

    /// Folder inside a diffusers pipeline ("" for the root).
    pub fn subfolder(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::Tokenizer => "tokenizer",
            Component::ControlNet => "",
        }
    }

    /// Weight file name without extension (diffusers vs transformers naming).
    fn weights_stem(self) -> &'static str {
        match self {
            Component::TextEncoder => "model",
            _ => "diffusion_pytorch_model",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::Tokenizer => "tokenizer",
            Component::ControlNet => "controlnet",
        };
        f.write_str(name)
    }
}

/// What a needed file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    Config,
    Weights,
    /// vocab.json / merges.txt: not needed when the folder has a tokenizer.json.
    Vocabulary,
    TokenizerConfig,
    /// Used when present (special_tokens_map.json, tokenizer.json), never reported missing.
    Optional,
}

/// One file a component needs; `candidates` are alternatives in order of preference
/// (fp32 weights before the fp16 variant), relative to the repo/folder root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededFile {
    pub component: Component,
    pub role: FileRole,
    pub candidates: Vec<String>,
}

impl NeededFile {
    /// The preferred name (what a missing-file report shows).
    pub fn name(&self) -> &str {
        &self.candidates[0]
    }
}

fn join_rel(folder: &str, file: &str) -> String {
    if folder.is_empty() {
        file.to_string()
    } else {
        format!("{folder}/{file}")
    }
}

/// The `.fp16.safetensors` variant name of an fp32 `.safetensors` weight file name.
pub fn fp16_variant(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".safetensors")?;
    if stem.ends_with(".fp16") {
        return None;
    }
    Some(format!("{stem}.fp16.safetensors"))
}

/// Every file the given components need, in a stable order (pure; `rotoscope models list`).
pub fn needed_files(components: &[Component]) -> Vec<NeededFile> {
    let unique: BTreeSet<Component> = components.iter().copied().collect();
    let mut files = Vec::new();
    for component in unique {
        let folder = component.subfolder();
        let file = |role, names: &[&str]| NeededFile {
            component,
            role,
            candidates: names.iter().map(|n| join_rel(folder, n)).collect(),
        };
        match component {
            Component::Tokenizer => {
                files.push(file(FileRole::Vocabulary, &["vocab.json"]));
                files.push(file(FileRole::Vocabulary, &["merges.txt"]));
                files.push(file(FileRole::TokenizerConfig, &["tokenizer_config.json"]));
                files.push(file(FileRole::Optional, &["special_tokens_map.json"]));
                files.push(file(FileRole::Optional, &["tokenizer.json"]));
            }
            _ => {
                files.push(file(FileRole::Config, &["config.json"]));
                let fp32 = format!("{}.safetensors", component.weights_stem());
                let fp16 = format!("{}.fp16.safetensors", component.weights_stem());
                files.push(file(FileRole::Weights, &[fp32.as_str(), fp16.as_str()]));
            }
        }
    }
    files
}

/// Errors while resolving or opening model files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}", missing_files_message(.repo, .files, .hint))]
    MissingFiles {
        /// Hub id or local folder.
        repo: String,
        /// Preferred names, relative to the repo root (weights also accept the fp16 variant).
        files: Vec<String>,
        hint: String,
    },
    /// One file of a hub repo (a LoRA) that is neither cached nor downloadable.
    #[error("1 model file(s) missing for {repo}:\n  - {file}\n{hint}")]
    MissingHubFile {
        repo: String,
        file: String,
        hint: String,
    },
    #[error(
        "model source {0:?} is neither an existing path nor a Hugging Face hub id (owner/name)"
    )]
    UnknownSource(String),
    #[error("{0}: single-file checkpoints (.safetensors/.ckpt) are not supported yet; use a diffusers folder or hub id")]
    SingleFileUnsupported(PathBuf),
    #[error("no Hugging Face cache directory: set HF_HOME or HF_HUB_CACHE")]
    NoCacheDir,
    #[error("Hugging Face hub error for {repo}/{file}: {message}")]
    Hub {
        repo: String,
        file: String,
        message: String,
    },
    #[error("cannot open weights {}: {source}", display_paths(.paths))]
    Weights {
        paths: Vec<PathBuf>,
        source: candle_core::Error,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn missing_files_message(repo: &str, files: &[String], hint: &str) -> String {
    let mut out = format!("{} model file(s) missing for {repo}:\n", files.len());
    for file in files {
        out.push_str("  - ");
        out.push_str(file);
        if let Some(alt) = fp16_variant(file) {
            out.push_str(&format!(" (or {alt})"));
        }
        out.push('\n');
    }
    out.push_str(hint);
    out
}

/// Where models come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A diffusers folder (or a component folder) on disk.
    Local(PathBuf),
    /// A Hugging Face hub repo, optionally `owner/name@revision`.
    Hub { repo: String, revision: String },
    /// A single A1111/civitai checkpoint file (issue 8).
    SingleFile(PathBuf),
}

/// Whether `s` can be the owner or the name of a hub repo id.
pub(crate) fn is_hub_name_part(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ModelSource {
    /// Existing paths win; otherwise `owner/name[@revision]` is a hub id.
    pub fn parse(source: &str) -> Result<Self, LoadError> {
        let path = Path::new(source);
        if path.is_dir() {
            return Ok(Self::Local(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(Self::SingleFile(path.to_path_buf()));
        }
        let (id, revision) = match source.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, rev),
            Some(_) => return Err(LoadError::UnknownSource(source.to_string())),
            None => (source, "main"),
        };
        match id.split_once('/') {
            Some((owner, name)) if is_hub_name_part(owner) && is_hub_name_part(name) => {
                Ok(Self::Hub {
                    repo: id.to_string(),
                    revision: revision.to_string(),
                })
            }
            _ => Err(LoadError::UnknownSource(source.to_string())),
        }
    }
}

/// How hub ids are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Only use the cache (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// hf-hub cache (the `hub/` folder with `models--owner--name`).
    pub cache_dir: Option<PathBuf>,
    pub progress: bool,
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl HubOptions {
    /// Reads `HF_HUB_OFFLINE`, `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`.
    pub fn from_env(progress: bool) -> Self {
        Self::from_lookup(progress, |key| std::env::var(key).ok())
    }

    /// [`Self::from_env`] over any variable lookup (pure; for tests).
    pub fn from_lookup(progress: bool, var: impl Fn(&str) -> Option<String>) -> Self {
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|home| PathBuf::from(home).join("hub")))
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache/huggingface/hub")));
        Self {
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            cache_dir,
            progress,
            endpoint: var("HF_ENDPOINT"),
            token: var("HF_TOKEN"),
        }
    }
}

/// Whether a weight file holds fp32 or the fp16 variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightPrecision {
    F32,
    F16,
}

/// Config and weights of one model component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub precision: WeightPrecision,
}

impl ModelFiles {
    /// Memory-mapped f32 weights (see [`load_safetensors_vb`]).
    pub fn var_builder(&self, device: &Device) -> Result<VarBuilder<'static>, LoadError> {
        load_safetensors_vb(std::slice::from_ref(&self.weights), device)
    }
}

/// A tokenizer folder (`vocab.json` + `merges.txt` or `tokenizer.json`, + its configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerFiles {
    pub dir: PathBuf,
}

/// Concrete paths of the requested components of one source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiffusersPipelineFiles {
    pub source: String,
    pub model_index: Option<PathBuf>,
    pub unet: Option<ModelFiles>,
    pub vae: Option<ModelFiles>,
    pub text_encoder: Option<ModelFiles>,
    pub tokenizer: Option<TokenizerFiles>,
    pub controlnet: Option<ModelFiles>,
}

/// A needed file that was found: which candidate matched, and where it is.
type Found = (NeededFile, usize, PathBuf);

impl DiffusersPipelineFiles {
    /// Resolves `source` (local folder or hub id) for `components`, with hub settings from
    /// the environment.
    pub fn resolve(
        source: &str,
        components: &[Component],
        progress: bool,
    ) -> Result<Self, LoadError> {
        Self::resolve_with(source, components, &HubOptions::from_env(progress))
    }

    /// [`Self::resolve`] with explicit hub settings.
    pub fn resolve_with(
        source: &str,
        components: &[Component],
        hub: &HubOptions,
    ) -> Result<Self, LoadError> {
        match ModelSource::parse(source)? {
            ModelSource::Local(dir) => Self::resolve_local(source, &dir, components),
            ModelSource::Hub { repo, revision } => {
                Self::resolve_hub(source, &repo, &revision, components, hub)
            }
            ModelSource::SingleFile(path) => Err(LoadError::SingleFileUnsupported(path)),
        }
    }

    fn resolve_local(
        source: &str,
        dir: &Path,
        components: &[Component],
    ) -> Result<Self, LoadError> {
        let mut missing = Vec::new();
        let mut found = Vec::new();
        for file in needed_files(components) {
            let base = local_component_root(dir, file.component);
            let hit = file
                .candidates
                .iter()
                .map(|c| base.join(c))
                .enumerate()
                .find(|(_, p)| p.is_file());
            match hit {
                Some((choice, path)) => found.push((file, choice, path)),
                None => missing.push(file),
            }
        }
        let tokenizer_dir = local_component_root(dir, Component::Tokenizer).join("tokenizer");
        let missing = reportable_missing(missing, |f| {
            f.component == Component::Tokenizer && tokenizer_dir.join("tokenizer.json").is_file()
        });
        if !missing.is_empty() {
            return Err(LoadError::MissingFiles {
                repo: dir.display().to_string(),
                files: missing,
                hint: format!(
                    "{} is not a complete diffusers model folder. Copy the files listed above into it, e.g. \
                     `huggingface-cli download <hub id> <files> --local-dir {}`, or point the preset at a complete folder or hub id.",
                    dir.display(),
                    dir.display()
                ),
            });
        }
        let model_index = Some(dir.join("model_index.json")).filter(|p| p.is_file());
        Ok(assemble(source, model_index, found))
    }

    fn resolve_hub(
        source: &str,
        repo_id: &str,
        revision: &str,
        components: &[Component],
        hub: &HubOptions,
    ) -> Result<Self, LoadError> {
        let cache_dir = hub.cache_dir.clone().ok_or(LoadError::NoCacheDir)?;
        let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
        let cache = Cache::new(cache_dir.clone()).repo(repo.clone());
        let mut api = None;
        let mut network_down: Option<String> = if hub.offline {
            Some("HF_HUB_OFFLINE is set".into())
        } else {
            None
        };
        let mut auth_problem = false;
        let mut found: Vec<Found> = Vec::new();
        let mut missing = Vec::new();
        for file in needed_files(components) {
            // Anything already cached wins, so an fp16 download is not replaced by fetching fp32.
            let cached = file
                .candidates
                .iter()
                .enumerate()
                .find_map(|(i, c)| cache.get(c).map(|p| (i, p)));
            if let Some((choice, path)) = cached {
                found.push((file, choice, path));
                continue;
            }
            let mut lookup = None;
            for (choice, candidate) in file.candidates.iter().enumerate() {
                if network_down.is_some() || auth_problem {
                    break;
                }
                if api.is_none() {
                    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
                        .with_progress(hub.progress);
                    if let Some(endpoint) = &hub.endpoint {
                        builder = builder.with_endpoint(endpoint.clone());
                    }
                    if hub.token.is_some() {
                        builder = builder.with_token(hub.token.clone());
                    }
                    api = Some(builder.build().map_err(|e| LoadError::Hub {
                        repo: repo_id.to_string(),
                        file: candidate.clone(),
                        message: e.to_string(),
                    })?);
                }
                let Some(client) = api.as_ref() else { break };
                match client.repo(repo.clone()).get(candidate) {
                    Ok(path) => {
                        lookup = Some((choice, path));
                        break;
                    }
                    Err(err) => match classify(err) {
                        HubFailure::NotFound => continue,
                        HubFailure::Unauthorized => auth_problem = true,
                        HubFailure::Unreachable(why) => network_down = Some(why),
                        HubFailure::Other(message) => {
                            return Err(LoadError::Hub {
                                repo: repo_id.to_string(),
                                file: candidate.clone(),
                                message,
                            })
                        }
                    },
                }
            }
            match lookup {
                Some((choice, path)) => found.push((file, choice, path)),
                None => missing.push(file),
            }
        }
        let missing = reportable_missing(missing, |f| {
            f.component == Component::Tokenizer
                && found
                    .iter()
                    .any(|(g, _, _)| g.name() == "tokenizer/tokenizer.json")
        });
        if !missing.is_empty() {
            return Err(LoadError::MissingFiles {
                repo: repo_id.to_string(),
                hint: hub_hint(
                    repo_id,
                    revision,
                    &missing,
                    &cache_dir,
                    network_down,
                    auth_problem,
                ),
                files: missing,
            });
        }
        let model_index = cache.get("model_index.json");
        Ok(assemble(source, model_index, found))
    }
}

/// One file of a hub repo (`file` relative to its root, e.g. a LoRA's
/// `pytorch_lora_weights.safetensors`): from the cache, else downloaded unless offline.
/// A file that can be neither is [`LoadError::MissingHubFile`], with how to get it.
pub fn resolve_hub_file(
    repo_id: &str,
    revision: &str,
    file: &str,
    hub: &HubOptions,
) -> Result<PathBuf, LoadError> {
    let cache_dir = hub.cache_dir.clone().ok_or(LoadError::NoCacheDir)?;
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    if let Some(path) = Cache::new(cache_dir.clone()).repo(repo.clone()).get(file) {
        return Ok(path);
    }
    let missing = |network_down: Option<String>, auth_problem: bool| LoadError::MissingHubFile {
        repo: repo_id.to_string(),
        file: file.to_string(),
        hint: hub_hint(
            repo_id,
            revision,
            &[file.to_string()],
            &cache_dir,
            network_down,
            auth_problem,
        ),
    };
    if hub.offline {
        return Err(missing(Some("HF_HUB_OFFLINE is set".into()), false));
    }
    let hub_error = |message: String| LoadError::Hub {
        repo: repo_id.to_string(),
        file: file.to_string(),
        message,
    };
    let api = hub_api(hub, &cache_dir).map_err(|e| hub_error(e.to_string()))?;
    match api.repo(repo).get(file) {
        Ok(path) => Ok(path),
        Err(err) => Err(match classify(err) {
            HubFailure::NotFound => missing(None, false),
            HubFailure::Unauthorized => missing(None, true),
            HubFailure::Unreachable(why) => missing(Some(why), false),
            HubFailure::Other(message) => hub_error(message),
        }),
    }
}

/// The hf-hub client for `hub`'s endpoint and token, on the cache at `cache_dir`.
fn hub_api(hub: &HubOptions, cache_dir: &Path) -> Result<hf_hub::api::sync::Api, ApiError> {
    let mut builder =
        ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf())).with_progress(hub.progress);
    if let Some(endpoint) = &hub.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if hub.token.is_some() {
        builder = builder.with_token(hub.token.clone());
    }
    builder.build()
}

/// Where a component's files sit in a local folder: its subfolder in a pipeline; the root for
/// a ControlNet folder (or its `controlnet/` subfolder inside a ControlNet pipeline).
fn local_component_root(dir: &Path, component: Component) -> PathBuf {
    if component == Component::ControlNet
        && !dir.join("config.json").is_file()
        && dir.join("controlnet/config.json").is_file()
    {
        return dir.join("controlnet");
    }
    dir.to_path_buf()
}

/// Missing files worth reporting: optional ones never are; vocabularies not when the folder
/// has a tokenizer.json.
fn reportable_missing(
    missing: Vec<NeededFile>,
    has_tokenizer_json: impl Fn(&NeededFile) -> bool,
) -> Vec<String> {
    missing
        .into_iter()
        .filter(|f| match f.role {
            FileRole::Optional => false,
            FileRole::Vocabulary => !has_tokenizer_json(f),
            _ => true,
        })
        .map(|f| f.name().to_string())
        .collect()
}

fn hub_hint(
    repo: &str,
    revision: &str,
    missing: &[String],
    cache_dir: &Path,
    network_down: Option<String>,
    auth_problem: bool,
) -> String {
    let why = match (&network_down, auth_problem) {
        (_, true) => {
            "the hub refused access (the repo may be gated, private or misspelled)".to_string()
        }
        (Some(reason), _) => format!(
            "they are not in the Hugging Face cache ({}) and could not be downloaded ({reason})",
            cache_dir.display()
        ),
        (None, false) => format!("they do not exist in the repo at revision {revision}"),
    };
    let revision_flag = if revision == "main" {
        String::new()
    } else {
        format!(" --revision {revision}")
    };
    let mut hint = format!(
        "Why: {why}.\nTo get them, on a machine with network access run\n  huggingface-cli download {repo}{revision_flag} {}\n\
         That fills the Hugging Face cache, read here from {} (set HF_HOME or HF_HUB_CACHE to use another one); \
         or add `--local-dir DIR` to the command and set the preset's model to DIR.",
        missing.join(" "),
        cache_dir.display()
    );
    if auth_problem {
        hint.push_str(
            "\nFor gated repos accept the license on huggingface.co and set HF_TOKEN (or run `huggingface-cli login`).",
        );
    }
    hint
}

enum HubFailure {
    NotFound,
    Unauthorized,
    Unreachable(String),
    Other(String),
}

fn classify(err: ApiError) -> HubFailure {
    match err {
        ApiError::RequestError(request) => {
            let text = request.to_string();
            match request.into_response().map(|r| r.status()) {
                Some(404) => HubFailure::NotFound,
                Some(401 | 403) => HubFailure::Unauthorized,
                Some(status) => HubFailure::Other(format!("HTTP {status}: {text}")),
                None => HubFailure::Unreachable(text),
            }
        }
        other => HubFailure::Other(other.to_string()),
    }
}

fn assemble(
    source: &str,
    model_index: Option<PathBuf>,
    found: Vec<Found>,
) -> DiffusersPipelineFiles {
    let mut files = DiffusersPipelineFiles {
        source: source.to_string(),
        model_index,
        ..Default::default()
    };
    let components: BTreeSet<Component> = found.iter().map(|(f, _, _)| f.component).collect();
    for component in components {
        let role_path = |role: FileRole| {
            found
                .iter()
                .find(|(f, _, _)| f.component == component && f.role == role)
        };
        if component == Component::Tokenizer {
            let any = found.iter().find(|(f, _, _)| f.component == component);
            if let Some(dir) = any.and_then(|(_, _, p)| p.parent()) {
                files.tokenizer = Some(TokenizerFiles {
                    dir: dir.to_path_buf(),
                });
            }
            continue;
        }
        let (Some((_, _, config)), Some((_, weights_choice, weights))) =
            (role_path(FileRole::Config), role_path(FileRole::Weights))
        else {
            continue;
        };
        // Candidate 0 is the fp32 file, candidate 1 its fp16 variant.
        let precision = if *weights_choice == 0 {
            WeightPrecision::F32
        } else {
            WeightPrecision::F16
        };
        let model = ModelFiles {
            config: config.clone(),
            weights: weights.clone(),
            precision,
        };
        match component {
            Component::Unet => files.unet = Some(model),
            Component::Vae => files.vae = Some(model),
            Component::TextEncoder => files.text_encoder = Some(model),
            Component::ControlNet => files.controlnet = Some(model),
            Component::Tokenizer => {}
        }
    }
    files
}

/// Opens safetensors files as one f32 `VarBuilder`: memory-mapped, fp16/bf16 tensors
/// converted to f32 as they are read.
pub fn load_safetensors_vb(
    paths: &[PathBuf],
    device: &Device,
) -> Result<VarBuilder<'static>, LoadError> {
    // SAFETY: the files are mapped read-only; like every mmap-based loader this assumes they
    // are not truncated or rewritten while the model is alive.
    unsafe { VarBuilder::from_mmaped_safetensors(paths, DType::F32, device) }.map_err(|source| {
        LoadError::Weights {
            paths: paths.to_vec(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_files_for_sd_pipeline() {
        let names: Vec<String> = needed_files(&Component::SD_PIPELINE)
            .iter()
            .map(|f| f.candidates.join("|"))
            .collect();
        assert_eq!(
            names,
            vec![
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors|vae/diffusion_pytorch_model.fp16.safetensors",
                "text_encoder/config.json",
                "text_encoder/model.safetensors|text_encoder/model.fp16.safetensors",
                "tokenizer/vocab.json",
                "tokenizer/merges.txt",
                "tokenizer/tokenizer_config.json",
                "tokenizer/special_tokens_map.json",
                "tokenizer/tokenizer.json",
            ]
        );
    }

    #[test]
    fn controlnet_files_sit_at_the_root() {
        let files = needed_files(&[Component::ControlNet, Component::ControlNet]);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].name(), "config.json");
        assert_eq!(files[1].name(), "diffusion_pytorch_model.safetensors");
    }

    #[test]
    fn parses_sources() {
        assert_eq!(
            ModelSource::parse("stable-diffusion-v1-5/stable-diffusion-v1-5").unwrap(),
            ModelSource::Hub {
                repo: "stable-diffusion-v1-5/stable-diffusion-v1-5".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSource::parse("lllyasviel/control_v11p_sd15_openpose@fp16").unwrap(),
            ModelSource::Hub {
                repo: "lllyasviel/control_v11p_sd15_openpose".into(),
                revision: "fp16".into()
            }
        );
        assert!(matches!(
            ModelSource::parse("./no/such/dir"),
            Err(LoadError::UnknownSource(_))
        ));
        assert!(matches!(
            ModelSource::parse("justaname"),
            Err(LoadError::UnknownSource(_))
        ));
        assert!(matches!(
            ModelSource::parse("/definitely/not/here"),
            Err(LoadError::UnknownSource(_))
        ));
    }

    #[test]
    fn env_lookup() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = HubOptions::from_lookup(false, env(&[("HF_HUB_OFFLINE", "1"), ("HF_HOME", "/h")]));
        assert!(o.offline);
        assert_eq!(o.cache_dir, Some(PathBuf::from("/h/hub")));
        let o = HubOptions::from_lookup(
            true,
            env(&[
                ("HF_HUB_OFFLINE", "0"),
                ("HF_HUB_CACHE", "/c"),
                ("HF_HOME", "/h"),
            ]),
        );
        assert!(!o.offline);
        assert_eq!(o.cache_dir, Some(PathBuf::from("/c")));
        let o = HubOptions::from_lookup(true, env(&[("HOME", "/root")]));
        assert_eq!(
            o.cache_dir,
            Some(PathBuf::from("/root/.cache/huggingface/hub"))
        );
    }

    #[test]
    fn fp16_variant_names() {
        assert_eq!(
            fp16_variant("unet/diffusion_pytorch_model.safetensors").as_deref(),
            Some("unet/diffusion_pytorch_model.fp16.safetensors")
        );
        assert_eq!(fp16_variant("unet/config.json"), None);
        assert_eq!(fp16_variant("a.fp16.safetensors"), None);
    }
}
