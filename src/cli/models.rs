//! `rotoscope models list|fetch`: which files the presets need, which are present, and
//! downloading the missing hub files.
//!
//! For each preset (`-p`, repeatable; default: every bundled preset) the inventory holds the
//! base model's components (diffusers folder or hub repo: configs, weights, tokenizer; single
//! file: the file and the tokenizer it needs), the VAE override, every ControlNet (TemporalNet
//! included), LoRAs (files, or single files of hub repos: see [`LoraSource`]), embeddings, and
//! the preprocessor weights in the models directory
//! (`$ROTOSCOPE_MODELS`, default `./models`). Hub files are looked up in the Hugging Face
//! cache (`HF_HUB_CACHE`, `HF_HOME`, `~/.cache/huggingface/hub`); `fetch` downloads the missing
//! ones through hf-hub (models/loading.rs) with progress bars and, when that is impossible
//! (offline, gated repo), fails with the list of what is missing and how to get it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use hf_hub::{Cache, Repo, RepoType};
use serde::Serialize;

use crate::app::resolve::model_stack_spec;
use crate::loaders::lora::{LoraSource, LORA_WEIGHT_NAME};
use crate::loaders::single_file::TensorFile;
use crate::loaders::source::{
    fp16_variant, needed_files, resolve_hub_file, Component, DiffusersPipelineFiles, FileRole,
    HubOptions, ModelSource,
};
use crate::loaders::taesd::original_pair_files;
use crate::models::family::Family;
use crate::preprocess::registry::{self, maps_for, PreprocessorOptions};
use crate::preset::Preset;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: ModelsAction,
}

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Download the missing hub files the presets need (through the Hugging Face cache)
    Fetch(SelectArgs),
    /// List the files the presets need, whether each is present, and its size
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Preset file or bundled preset name (repeatable; default: all bundled presets)
    #[arg(short = 'p', long = "preset")]
    pub presets: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print the inventory as one JSON document
    #[arg(long)]
    pub json: bool,
}

/// Where a missing file can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A Hugging Face hub repo: `rotoscope models fetch`.
    Hub,
    /// `scripts/fetch-models.sh` (preprocessor weights).
    FetchScript,
    /// A file the user supplies (local checkpoints, LoRAs, embeddings).
    User,
}

/// One needed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeededEntry {
    /// Preset field it comes from (`model.base`, `controlnets[1]`, `loras[0]`, ...).
    pub role: String,
    /// Hub id, folder or file as the preset names it.
    pub source: String,
    /// File name inside the source (or the file itself).
    pub file: String,
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub origin: Origin,
}

/// A hub repo a preset needs, with the components to fetch from it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HubNeed {
    pub source: String,
    pub components: Vec<Component>,
}

/// One file of a hub repo a preset needs on its own (a LoRA).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HubFileNeed {
    /// As the preset names it.
    pub source: String,
    pub repo: String,
    pub revision: String,
    pub file: String,
}

/// Everything one preset needs.
#[derive(Debug, Clone, Serialize)]
pub struct PresetInventory {
    pub preset: String,
    pub files: Vec<NeededEntry>,
    #[serde(skip)]
    pub hub: Vec<HubNeed>,
    #[serde(skip)]
    pub hub_files: Vec<HubFileNeed>,
}

impl PresetInventory {
    pub fn missing(&self) -> impl Iterator<Item = &NeededEntry> {
        self.files.iter().filter(|f| !f.present)
    }
}

/// How a preset's model reference is to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SourceKind {
    Folder(PathBuf),
    File(PathBuf),
    /// A path that does not exist (a file name, or clearly a path rather than a hub id).
    MissingPath(PathBuf),
    Hub {
        repo: String,
        revision: String,
    },
}

const WEIGHT_EXTENSIONS: [&str; 6] = ["safetensors", "ckpt", "pt", "pth", "bin", "yaml"];

fn classify(source: &str) -> SourceKind {
    let path = Path::new(source);
    if path.is_dir() {
        return SourceKind::Folder(path.to_path_buf());
    }
    if path.is_file() {
        return SourceKind::File(path.to_path_buf());
    }
    let looks_like_file = path.extension().is_some_and(|e| {
        WEIGHT_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
    });
    let looks_like_path = path.is_absolute()
        || source.starts_with("./")
        || source.starts_with("../")
        || source.matches('/').count() > 1;
    match ModelSource::parse(source) {
        Ok(ModelSource::Hub { repo, revision }) if !looks_like_file && !looks_like_path => {
            SourceKind::Hub { repo, revision }
        }
        _ => SourceKind::MissingPath(path.to_path_buf()),
    }
}

fn file_entry(role: &str, source: &str, path: &Path, origin: Origin) -> NeededEntry {
    let size = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    NeededEntry {
        role: role.to_string(),
        source: source.to_string(),
        file: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
        present: size.is_some(),
        path: size.map(|_| path.to_path_buf()),
        size,
        origin,
    }
}

/// One file of a hub repo, present when it is in the Hugging Face cache.
fn hub_file_entry(
    role: &str,
    source: &str,
    repo: &str,
    revision: &str,
    file: &str,
    hub: &HubOptions,
) -> NeededEntry {
    let path = hub.cache_dir.as_ref().and_then(|dir| {
        Cache::new(dir.clone())
            .repo(Repo::with_revision(
                repo.to_string(),
                RepoType::Model,
                revision.to_string(),
            ))
            .get(file)
    });
    let size = path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len());
    NeededEntry {
        role: role.to_string(),
        source: source.to_string(),
        file: file.to_string(),
        present: path.is_some(),
        path,
        size,
        origin: Origin::Hub,
    }
}

/// The files of `components` in a local diffusers folder or a cached hub repo.
fn diffusers_entries(
    role: &str,
    source: &str,
    components: &[Component],
    locate: impl Fn(&str) -> Option<PathBuf>,
    origin: Origin,
) -> Vec<NeededEntry> {
    needed_files(components)
        .into_iter()
        .filter(|f| !matches!(f.role, FileRole::Optional))
        .map(|f| {
            let hit = f
                .candidates
                .iter()
                .find_map(|c| locate(c).map(|p| (c.clone(), p)));
            let size = hit
                .as_ref()
                .and_then(|(_, p)| std::fs::metadata(p).ok())
                .map(|m| m.len());
            let file = match (&hit, fp16_variant(f.name())) {
                (Some((name, _)), _) => name.clone(),
                (None, Some(alt)) => format!("{} (or {alt})", f.name()),
                (None, None) => f.name().to_string(),
            };
            let role = match f.component {
                Component::ControlNet => role.to_string(),
                component => format!("{role} ({component})"),
            };
            NeededEntry {
                role,
                source: source.to_string(),
                file,
                present: hit.is_some(),
                path: hit.map(|(_, p)| p),
                size,
                origin,
            }
        })
        .collect()
}

/// Entries and hub needs for one model reference.
fn model_entries(
    role: &str,
    source: &str,
    components: &[Component],
    hub: &HubOptions,
    inventory: &mut PresetInventory,
) {
    match classify(source) {
        SourceKind::Folder(dir) => {
            let root = if components == [Component::ControlNet]
                && !dir.join("config.json").is_file()
                && dir.join("controlnet/config.json").is_file()
            {
                dir.join("controlnet")
            } else {
                dir.clone()
            };
            inventory.files.extend(diffusers_entries(
                role,
                source,
                components,
                |rel| Some(root.join(rel)).filter(|p| p.is_file()),
                Origin::User,
            ));
        }
        SourceKind::File(path) | SourceKind::MissingPath(path) => {
            inventory
                .files
                .push(file_entry(role, source, &path, Origin::User));
        }
        SourceKind::Hub { repo, revision } => {
            let cache = hub.cache_dir.as_ref().map(|dir| {
                Cache::new(dir.clone()).repo(Repo::with_revision(
                    repo.clone(),
                    RepoType::Model,
                    revision.clone(),
                ))
            });
            inventory.files.extend(diffusers_entries(
                role,
                source,
                components,
                |rel| cache.as_ref().and_then(|c| c.get(rel)),
                Origin::Hub,
            ));
            inventory.hub.push(HubNeed {
                source: source.to_string(),
                components: components.to_vec(),
            });
        }
    }
}

/// SD1.x or SD2.x, from a checkpoint's cross-attention width (SD1.x when unreadable).
fn checkpoint_family(path: &Path) -> Family {
    TensorFile::open(path)
        .ok()
        .and_then(|file| {
            file.shapes()
                .iter()
                .find(|(k, _)| {
                    k.starts_with("model.diffusion_model.") && k.ends_with("attn2.to_k.weight")
                })
                .and_then(|(_, shape)| Family::from_cross_attention_dim(*shape.get(1)?))
        })
        .unwrap_or(Family::Sd1)
}

/// Everything `preset` needs. `preset_dir` resolves relative paths as the loaders do;
/// `models_dir` holds the preprocessor weights.
pub fn inventory(
    name: &str,
    preset: &Preset,
    preset_dir: Option<&Path>,
    models_dir: &Path,
    hub: &HubOptions,
) -> PresetInventory {
    let mut inv = PresetInventory {
        preset: name.to_string(),
        files: Vec::new(),
        hub: Vec::new(),
        hub_files: Vec::new(),
    };
    let spec = model_stack_spec(preset, preset_dir);
    let mut base_components = vec![
        Component::Unet,
        Component::TextEncoder,
        Component::Tokenizer,
    ];
    if spec.vae.is_none() {
        base_components.push(Component::Vae);
    }
    let base_kind = classify(&spec.base);
    model_entries("model.base", &spec.base, &base_components, hub, &mut inv);
    if let SourceKind::File(path) | SourceKind::MissingPath(path) = &base_kind {
        if let Some(config) = &spec.config {
            let role = "model.config";
            let source = config.to_string_lossy().into_owned();
            if config.is_dir() {
                if config.join("tokenizer").is_dir() {
                    model_entries(role, &source, &[Component::Tokenizer], hub, &mut inv);
                }
            } else {
                inv.files
                    .push(file_entry(role, &source, config, Origin::User));
            }
        }
        let has_config_tokenizer = spec
            .config
            .as_ref()
            .is_some_and(|c| c.join("tokenizer").is_dir());
        if !has_config_tokenizer {
            let repo = checkpoint_family(path).tokenizer_repo();
            model_entries(
                "model.base (tokenizer for a single file)",
                repo,
                &[Component::Tokenizer],
                hub,
                &mut inv,
            );
        }
    }
    if let Some(vae) = &spec.vae {
        if let Some((encoder, decoder)) = original_pair_files(Path::new(vae)) {
            // TAESD's original encoder / decoder pair: two files, either named.
            for path in [encoder, decoder] {
                inv.files
                    .push(file_entry("model.vae", vae, &path, Origin::User));
            }
        } else {
            // A VAE repo or folder holds its config and weights at the root, like a ControlNet.
            let components = match classify(vae) {
                SourceKind::Folder(dir) if dir.join("vae/config.json").is_file() => {
                    vec![Component::Vae]
                }
                _ => vec![Component::ControlNet],
            };
            model_entries("model.vae", vae, &components, hub, &mut inv);
        }
    }
    let locate = |s: &str| crate::preset::models_ext::locate(s, preset_dir);
    for (i, c) in preset.controlnets.iter().enumerate() {
        let role = format!("controlnets[{i}] ({})", c.kind);
        model_entries(
            &role,
            &locate(&c.model),
            &[Component::ControlNet],
            hub,
            &mut inv,
        );
    }
    let temporalnet = &preset.temporal.temporalnet;
    if temporalnet.enabled {
        model_entries(
            "temporal.temporalnet",
            &locate(&temporalnet.model),
            &[Component::ControlNet],
            hub,
            &mut inv,
        );
    }
    if let Some(motion) = &preset.temporal.motion_module {
        // A MotionAdapter folder or repo holds config.json and weights at its root, like a
        // ControlNet; a single .safetensors/.ckpt is listed as a file.
        model_entries(
            "temporal.motion_module",
            &locate(&motion.path),
            &[Component::ControlNet],
            hub,
            &mut inv,
        );
    }
    for (i, lora) in spec.loras.iter().enumerate() {
        let source = lora.path.to_string_lossy().into_owned();
        let role = format!("loras[{i}]");
        match LoraSource::parse(&lora.path) {
            LoraSource::Local(path) => {
                // A folder as `huggingface-cli download --local-dir` leaves a hub LoRA.
                let inside = path.join(LORA_WEIGHT_NAME);
                let path = if path.is_dir() { inside } else { path };
                inv.files
                    .push(file_entry(&role, &source, &path, Origin::User));
            }
            LoraSource::Hub {
                repo,
                revision,
                file,
            } => {
                inv.files
                    .push(hub_file_entry(&role, &source, &repo, &revision, &file, hub));
                inv.hub_files.push(HubFileNeed {
                    source,
                    repo,
                    revision,
                    file,
                });
            }
        }
    }
    for (i, emb) in spec.embeddings.iter().enumerate() {
        let source = emb.to_string_lossy().into_owned();
        inv.files.push(file_entry(
            &format!("embeddings[{i}]"),
            &source,
            emb,
            Origin::User,
        ));
    }
    // The packaged preprocessor weights of every map the ControlNets and the detailer read.
    let kinds = maps_for(preset.controlnets.iter().map(|c| c.kind).collect(), preset);
    let options = PreprocessorOptions::for_preset(preset, models_dir.to_path_buf(), 0.0);
    for entry in kinds.into_iter().filter_map(registry::lookup) {
        let source = entry.models_folder(models_dir).display().to_string();
        for path in entry.model_paths(&options) {
            inv.files.push(file_entry(
                entry.section,
                &source,
                &path,
                Origin::FetchScript,
            ));
        }
    }
    inv
}

/// `-p` presets, or every bundled one: (display name, preset, its folder).
fn selected_presets(select: &SelectArgs) -> anyhow::Result<Vec<(String, Preset, Option<PathBuf>)>> {
    let names: Vec<PathBuf> = if select.presets.is_empty() {
        Preset::bundled_names().map(PathBuf::from).collect()
    } else {
        select.presets.clone()
    };
    names
        .iter()
        .map(|name| {
            let preset = Preset::resolve(name)
                .with_context(|| format!("loading preset {}", name.display()))?;
            let dir = name
                .is_file()
                .then(|| name.parent().map(Path::to_path_buf))
                .flatten();
            Ok((name.display().to_string(), preset, dir))
        })
        .collect()
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The text report of `models list`.
pub fn render_text(inventories: &[PresetInventory]) -> String {
    let mut out = String::new();
    let mut missing = BTreeSet::new();
    for inv in inventories {
        out.push_str(&format!("preset {}\n", inv.preset));
        let mut last_role_source = None;
        for f in &inv.files {
            let key = (f.role.as_str(), f.source.as_str());
            if last_role_source != Some(key) {
                out.push_str(&format!("  {}: {}\n", f.role, f.source));
                last_role_source = Some(key);
            }
            let status = if f.present { "present" } else { "MISSING" };
            match f.size {
                Some(size) => out.push_str(&format!(
                    "    {status:<8} {:<56} {:>10}\n",
                    f.file,
                    human_size(size)
                )),
                None => out.push_str(&format!("    {status:<8} {}\n", f.file)),
            }
            if !f.present {
                missing.insert((f.origin, f.source.clone(), f.file.clone()));
            }
        }
    }
    if missing.is_empty() {
        out.push_str("All model files are present.\n");
    } else {
        out.push_str(&format!("{} file(s) missing.\n", missing.len()));
        let origins: BTreeSet<Origin> = missing.iter().map(|(o, _, _)| *o).collect();
        for origin in origins {
            out.push_str(match origin {
                Origin::Hub => "  Hub files: run `rotoscope models fetch` (needs network access to huggingface.co).\n",
                Origin::FetchScript => "  Preprocessor weights: run scripts/fetch-models.sh (installs into $ROTOSCOPE_MODELS, default ./models).\n",
                Origin::User => "  Local files (checkpoints, LoRAs, embeddings, folders): put them where the preset says, or fix the preset.\n",
            });
        }
    }
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    presets: &'a [PresetInventory],
    missing: usize,
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let hub = HubOptions::from_env(false);
    let models_dir = crate::preprocess::models_dir();
    let inventories: Vec<PresetInventory> = selected_presets(&args.select)?
        .iter()
        .map(|(name, preset, dir)| inventory(name, preset, dir.as_deref(), &models_dir, &hub))
        .collect();
    if args.json {
        let missing = inventories.iter().map(|i| i.missing().count()).sum();
        let report = JsonReport {
            presets: &inventories,
            missing,
        };
        let mut text = serde_json::to_string_pretty(&report).context("encoding JSON")?;
        text.push('\n');
        super::print_stdout(&text)
    } else {
        super::print_stdout(&render_text(&inventories))
    }
}

/// Errors of `models fetch`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{count} model file(s) could not be fetched:\n{details}")]
    Incomplete { count: usize, details: String },
}

fn fetch(args: SelectArgs) -> anyhow::Result<()> {
    let hub = HubOptions::from_env(true);
    let models_dir = crate::preprocess::models_dir();
    let presets = selected_presets(&args)?;
    let inventories: Vec<PresetInventory> = presets
        .iter()
        .map(|(name, preset, dir)| inventory(name, preset, dir.as_deref(), &models_dir, &hub))
        .collect();
    // Each hub repo once, with the union of the components any preset needs from it.
    let mut needs: Vec<HubNeed> = Vec::new();
    for need in inventories.iter().flat_map(|i| i.hub.iter()) {
        match needs.iter_mut().find(|n| n.source == need.source) {
            Some(known) => {
                for c in &need.components {
                    if !known.components.contains(c) {
                        known.components.push(*c);
                    }
                }
            }
            None => needs.push(need.clone()),
        }
    }
    let mut failures = Vec::new();
    let mut count = 0;
    for need in &needs {
        eprintln!(
            "fetching {} ({})",
            need.source,
            component_list(&need.components)
        );
        if let Err(err) = DiffusersPipelineFiles::resolve_with(&need.source, &need.components, &hub)
        {
            count += match &err {
                crate::loaders::source::LoadError::MissingFiles { files, .. } => files.len(),
                _ => 1,
            };
            failures.push(format!("{}: {err}", need.source));
        }
    }
    // Single hub files (LoRAs), each once.
    let files: BTreeSet<&HubFileNeed> = inventories.iter().flat_map(|i| &i.hub_files).collect();
    for need in files {
        eprintln!("fetching {} ({})", need.repo, need.file);
        if let Err(err) = resolve_hub_file(&need.repo, &need.revision, &need.file, &hub) {
            count += 1;
            failures.push(format!("{}: {err}", need.source));
        }
    }
    // What no download can provide.
    let mut seen = BTreeSet::new();
    for f in inventories.iter().flat_map(|i| i.missing()) {
        if f.origin == Origin::Hub || !seen.insert((f.source.clone(), f.file.clone())) {
            continue;
        }
        count += 1;
        failures.push(match f.origin {
            Origin::FetchScript => format!(
                "{} ({}): run scripts/fetch-models.sh (installs into $ROTOSCOPE_MODELS, default ./models)",
                f.file, f.role
            ),
            _ => format!(
                "{} ({}): a local file; put it at {} or change the preset",
                f.file, f.role, f.source
            ),
        });
    }
    if failures.is_empty() {
        eprintln!("All model files are present.");
        return Ok(());
    }
    Err(FetchError::Incomplete {
        count,
        details: failures.join("\n"),
    }
    .into())
}

fn component_list(components: &[Component]) -> String {
    components
        .iter()
        .map(|c| match c {
            Component::ControlNet => "model at the repo root".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.action {
        ModelsAction::List(list_args) => list(list_args),
        ModelsAction::Fetch(select) => fetch(select),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified_like_the_loaders_read_them() {
        assert_eq!(
            classify("lllyasviel/control_v11p_sd15_openpose"),
            SourceKind::Hub {
                repo: "lllyasviel/control_v11p_sd15_openpose".into(),
                revision: "main".into()
            }
        );
        assert!(matches!(
            classify("ckpt/dreamshaper_8.safetensors"),
            SourceKind::MissingPath(_)
        ));
        assert!(matches!(classify("./models/x"), SourceKind::MissingPath(_)));
        assert!(matches!(classify("a/b/c"), SourceKind::MissingPath(_)));
        assert!(matches!(classify("src"), SourceKind::Folder(_)));
        assert!(matches!(classify("Cargo.toml"), SourceKind::File(_)));
    }

    #[test]
    fn a_taesd_pair_is_listed_as_its_two_files() {
        let pair = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae_tiny/original");
        let yaml = |vae: &Path| {
            format!(
                "model: {{base: stable-diffusion-v1-5/stable-diffusion-v1-5, vae: {}}}\nprompt: x\n",
                vae.display()
            )
        };
        let hub = HubOptions::from_env(false);
        for named in [
            pair.clone(),
            pair.join("taesd_decoder.safetensors"),
            pair.join("taesd_encoder.safetensors"),
        ] {
            let preset = Preset::from_yaml(&yaml(&named), "t.yaml").unwrap();
            let inv = inventory("t", &preset, None, Path::new("models"), &hub);
            let vae: Vec<_> = inv.files.iter().filter(|f| f.role == "model.vae").collect();
            let names: Vec<_> = vae.iter().map(|f| f.file.as_str()).collect();
            assert_eq!(
                names,
                ["taesd_encoder.safetensors", "taesd_decoder.safetensors"],
                "{named:?}"
            );
            assert!(vae.iter().all(|f| f.present), "{named:?}");
        }
    }

    #[test]
    fn a_hub_lora_is_a_hub_need() {
        let cache = tempfile::tempdir().unwrap();
        let hub = HubOptions {
            offline: true,
            cache_dir: Some(cache.path().to_path_buf()),
            progress: false,
            endpoint: None,
            token: None,
        };
        let preset = Preset::from_yaml(
            "model: {base: stable-diffusion-v1-5/stable-diffusion-v1-5}\nprompt: x\nloras:\n  \
             - {path: latent-consistency/lcm-lora-sdv1-5}\n  \
             - {path: ByteDance/Hyper-SD/Hyper-SD15-8steps-lora.safetensors, weight: 0.5}\n  \
             - {path: loras/mine.safetensors}\n",
            "t.yaml",
        )
        .unwrap();
        let inv = inventory("t", &preset, None, Path::new("models"), &hub);
        let entry = |role: &str| {
            inv.files
                .iter()
                .find(|f| f.role == role)
                .unwrap_or_else(|| panic!("no {role} in {:?}", inv.files))
        };
        let lcm = entry("loras[0]");
        assert_eq!(lcm.source, "latent-consistency/lcm-lora-sdv1-5");
        assert_eq!(lcm.file, "pytorch_lora_weights.safetensors");
        assert_eq!((lcm.present, lcm.origin), (false, Origin::Hub));
        assert_eq!(entry("loras[1]").file, "Hyper-SD15-8steps-lora.safetensors");
        assert_eq!(entry("loras[2]").origin, Origin::User);
        assert_eq!(
            inv.hub_files,
            vec![
                HubFileNeed {
                    source: "latent-consistency/lcm-lora-sdv1-5".into(),
                    repo: "latent-consistency/lcm-lora-sdv1-5".into(),
                    revision: "main".into(),
                    file: "pytorch_lora_weights.safetensors".into(),
                },
                HubFileNeed {
                    source: "ByteDance/Hyper-SD/Hyper-SD15-8steps-lora.safetensors".into(),
                    repo: "ByteDance/Hyper-SD".into(),
                    revision: "main".into(),
                    file: "Hyper-SD15-8steps-lora.safetensors".into(),
                },
            ]
        );
        let text = render_text(std::slice::from_ref(&inv));
        assert!(
            text.contains("  loras[0]: latent-consistency/lcm-lora-sdv1-5\n    MISSING  pytorch_lora_weights.safetensors\n"),
            "{text}"
        );
        assert!(text.contains("rotoscope models fetch"), "{text}");

        // Once in the cache (as hf-hub lays it out), the LoRA is present.
        let repo = cache
            .path()
            .join("models--latent-consistency--lcm-lora-sdv1-5");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let snapshot = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(snapshot.join("pytorch_lora_weights.safetensors"), b"1234").unwrap();
        let inv = inventory("t", &preset, None, Path::new("models"), &hub);
        let lcm = inv.files.iter().find(|f| f.role == "loras[0]").unwrap();
        assert_eq!((lcm.present, lcm.size), (true, Some(4)));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
