//! Every preset in presets/ parses, and the bundled copies compiled into the binary are
//! the same files.

use std::path::Path;

use rotoscope::preset::{self, ControlKind, Preset};

fn preset_files() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("presets/ directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_preset_file_parses_and_validates() {
    let files = preset_files();
    assert!(
        files.len() >= 3,
        "expected at least 3 presets, found {files:?}"
    );
    for file in files {
        let p = Preset::load(&file).unwrap_or_else(|e| panic!("{e}"));
        p.validate(&file.display().to_string()).unwrap();
        assert!(
            !p.prompt.trim().is_empty(),
            "{}: empty prompt",
            file.display()
        );
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            p.name.as_deref(),
            Some(stem.as_str()),
            "{}: name",
            file.display()
        );
    }
}

#[test]
fn required_styles_are_bundled_with_real_sd15_models() {
    for name in ["anime", "watercolor", "lineart-ink"] {
        let text = preset::bundled(name).unwrap_or_else(|| panic!("{name} not bundled"));
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("presets/{name}.yaml"));
        assert_eq!(
            text,
            std::fs::read_to_string(&file).unwrap(),
            "{name}: bundled copy differs"
        );
        let p = Preset::from_yaml(text, name).unwrap();
        assert_eq!(p.model.base, "stable-diffusion-v1-5/stable-diffusion-v1-5");
        let model_of = |kind| {
            p.controlnets
                .iter()
                .find(|c| c.kind == kind)
                .map(|c| c.model.as_str())
        };
        assert_eq!(
            model_of(ControlKind::Openpose),
            Some("lllyasviel/control_v11p_sd15_openpose")
        );
        assert_eq!(
            model_of(ControlKind::Softedge),
            Some("lllyasviel/control_v11p_sd15_softedge")
        );
        assert!(!p.negative_prompt.is_empty());
        assert!(p.batch.frames < 200 && p.batch.overlap < p.batch.frames);
    }
    let names: Vec<_> = Preset::bundled_names().collect();
    assert_eq!(
        names,
        [
            "anime",
            "watercolor",
            "lineart-ink",
            "anime-animatediff",
            "anime-fast"
        ]
    );
}

#[test]
fn every_preset_file_is_bundled() {
    let names: Vec<_> = Preset::bundled_names().collect();
    for file in preset_files() {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        if stem == "smoke" {
            continue; // test models relative to the repository; not for other directories
        }
        let text =
            preset::bundled(&stem).unwrap_or_else(|| panic!("{stem} not bundled ({names:?})"));
        assert_eq!(
            text,
            std::fs::read_to_string(&file).unwrap(),
            "{stem}: bundled copy differs"
        );
    }
}

#[test]
fn animatediff_preset_uses_the_motion_adapter_and_resolves_by_name() {
    let p = Preset::resolve(Path::new("anime-animatediff")).unwrap();
    p.validate("anime-animatediff").unwrap();
    assert_eq!(p.name.as_deref(), Some("anime-animatediff"));
    assert_eq!(p.model.base, "stable-diffusion-v1-5/stable-diffusion-v1-5");
    assert_eq!(p.controlnets.len(), 1);
    assert_eq!(p.controlnets[0].kind, ControlKind::Openpose);
    assert_eq!(
        p.controlnets[0].model,
        "lllyasviel/control_v11p_sd15_openpose"
    );
    let motion = p
        .temporal
        .motion_module
        .as_ref()
        .expect("temporal.motion_module");
    assert_eq!(motion.path, "guoyww/animatediff-motion-adapter-v1-5-2");
    assert_eq!((motion.context_length, motion.context_overlap), (16, 4));
    // Joint batch sampling: none of the frame-by-frame temporal options.
    assert!(!p.temporal.temporalnet.enabled && !p.temporal.flow_init.enabled);
    assert!(!p.temporal.cross_frame_attention.active());
    assert!(p.batch.frames < 200 && p.batch.overlap < p.batch.frames);
}

#[test]
fn fast_preset_is_the_anime_look_on_the_fast_path() {
    let p = Preset::resolve(Path::new("anime-fast")).unwrap();
    p.validate("anime-fast").unwrap();
    let anime = Preset::resolve(Path::new("anime")).unwrap();
    assert_eq!(p.name.as_deref(), Some("anime-fast"));
    // The anime look: its prompts, base model and ControlNets.
    assert_eq!(p.prompt, anime.prompt);
    assert_eq!(p.negative_prompt, anime.negative_prompt);
    assert_eq!(p.model.base, anime.model.base);
    assert_eq!(p.controlnets, anime.controlnets);
    // LCM-LoRA from the hub with the lcm sampler, few steps, low guidance.
    assert_eq!(p.loras.len(), 1);
    assert_eq!(p.loras[0].path, "latent-consistency/lcm-lora-sdv1-5");
    assert_eq!(p.loras[0].weight, 1.0);
    assert_eq!(p.sampler.scheduler, preset::SchedulerKind::Lcm);
    assert_eq!((p.sampler.steps, p.sampler.cfg_scale), (6, 1.5));
    // The tiny VAE and DeepCache.
    assert_eq!(p.model.vae.as_deref(), Some("madebyollin/taesd"));
    let cache = p.deep_cache.as_ref().expect("deep_cache");
    assert_eq!((cache.interval, cache.branch), (2, 0));
    // Only the cheap temporal options.
    assert!(p.temporal.flow_init.enabled && p.temporal.chain_batches);
    assert!(!p.temporal.temporalnet.enabled);
    assert!(!p.temporal.cross_frame_attention.active());
    assert!(p.temporal.motion_module.is_none());
    // Face and hand detailing in few steps.
    assert!(p.detail.face.enabled && p.detail.hands.enabled);
    assert_eq!((p.detail.face.steps, p.detail.hands.steps), (4, 4));
    assert!(p.batch.frames < 200 && p.batch.overlap < p.batch.frames);
}

#[test]
fn resolve_prefers_an_existing_file_over_a_bundled_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anime");
    std::fs::write(&file, "model: {base: local/model}\nprompt: mine\n").unwrap();
    assert_eq!(Preset::resolve(&file).unwrap().prompt, "mine");
    assert_eq!(
        Preset::resolve(Path::new("anime")).unwrap().name.as_deref(),
        Some("anime")
    );
    let err = Preset::resolve(Path::new("no-such-style"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-such-style") && err.contains("anime, watercolor, lineart-ink"),
        "{err}"
    );
}
