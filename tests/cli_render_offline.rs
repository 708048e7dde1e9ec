//! The README's main command on a machine without the SD weights and without network
//! (`HF_HUB_OFFLINE=1`, an empty Hugging Face cache): `rotoscope render` runs the
//! preprocessing with the real packaged pose / soft-edge weights, keeps it, and stops with
//! exit code 2 and the exact list of missing model files and how to get them.

mod cli_common;
#[path = "render_common/mod.rs"]
mod render_common;

use std::path::Path;
use std::process::Output;

use cli_common::{capture, command, modified, offline_hub};
use render_common::{models_dir, repo_path};

fn main_command(output: &Path, hf_home: &Path) -> Output {
    let mut render = command(["render"]);
    render
        .arg(repo_path("samples/astronaut.mp4"))
        .arg("-p")
        .arg(repo_path("presets/anime.yaml"))
        .arg("-o")
        .arg(output)
        // HED at 512² takes seconds per frame: two frames show the behaviour.
        .args(["--frames", "0..2"])
        .env("ROTOSCOPE_MODELS", models_dir());
    capture(offline_hub(&mut render, hf_home))
}

/// The `  - file` lines listed under `N model file(s) missing for REPO:`, per repo.
fn missing_lists(stderr: &str) -> Vec<(String, Vec<String>)> {
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    for line in stderr.lines() {
        if let Some((_, repo)) = line.split_once(" model file(s) missing for ") {
            lists.push((repo.trim_end_matches(':').to_string(), Vec::new()));
        } else if let (Some(file), Some((_, files))) = (line.strip_prefix("  - "), lists.last_mut())
        {
            files.push(file.to_string());
        }
    }
    lists
}

#[test]
fn offline_main_command_preprocesses_then_lists_the_missing_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    std::fs::create_dir(&hf_home).unwrap();
    let output = dir.path().join("out/astronaut-anime.mp4");

    let result = main_command(&output, &hf_home);
    let err = String::from_utf8_lossy(&result.stderr).into_owned();
    assert_eq!(result.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(
            "error: 9 model file(s) missing for stable-diffusion-v1-5/stable-diffusion-v1-5:"
        ),
        "{err}"
    );
    let weights = |stem: &str| format!("{stem}.safetensors (or {stem}.fp16.safetensors)");
    let controlnet = vec![
        "config.json".to_string(),
        weights("diffusion_pytorch_model"),
    ];
    let expected = vec![
        (
            "stable-diffusion-v1-5/stable-diffusion-v1-5".to_string(),
            vec![
                "unet/config.json".to_string(),
                weights("unet/diffusion_pytorch_model"),
                "vae/config.json".to_string(),
                weights("vae/diffusion_pytorch_model"),
                "text_encoder/config.json".to_string(),
                weights("text_encoder/model"),
                "tokenizer/vocab.json".to_string(),
                "tokenizer/merges.txt".to_string(),
                "tokenizer/tokenizer_config.json".to_string(),
            ],
        ),
        (
            "lllyasviel/control_v11p_sd15_openpose".to_string(),
            controlnet.clone(),
        ),
        (
            "lllyasviel/control_v11p_sd15_softedge".to_string(),
            controlnet.clone(),
        ),
        ("CiaraRowles/TemporalNet".to_string(), controlnet),
    ];
    assert_eq!(missing_lists(&err), expected, "{err}");
    // How to get them: the hub download, the fetch command, or files on disk.
    for hint in [
        "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5",
        "rotoscope models fetch -p ",
        "single .safetensors",
        "HF_HUB_OFFLINE",
    ] {
        assert!(err.contains(hint), "{hint:?} not in {err}");
    }

    // The preprocessing ran with the real weights and is kept: maps and keypoints of both
    // frames, nothing of the frames outside --frames, and no output.
    let cache = dir.path().join("out/astronaut-anime.mp4.work/preprocess");
    assert!(err.contains("2 frame(s)"), "{err}");
    for frame in 0..2 {
        for file in [
            format!("pose_{frame:06}.png"),
            format!("pose_{frame:06}_keypoints.json"),
            format!("softedge_{frame:06}.png"),
        ] {
            let path = cache.join(&file);
            assert!(path.is_file(), "{} missing", path.display());
            assert!(std::fs::metadata(&path).unwrap().len() > 0);
        }
        let map = image::open(cache.join(format!("softedge_{frame:06}.png"))).unwrap();
        assert_eq!((map.width(), map.height()), (512, 512));
        let edges = map.to_luma8();
        assert!(edges.pixels().any(|p| p.0[0] > 128), "edges were found");
    }
    assert!(!cache.join("pose_000002.png").exists());
    let keypoints = std::fs::read_to_string(cache.join("pose_000000_keypoints.json")).unwrap();
    let keypoints: serde_json::Value = serde_json::from_str(&keypoints).unwrap();
    assert_eq!(
        keypoints["people"].as_array().map(Vec::len),
        Some(1),
        "the astronaut is found"
    );
    assert!(!output.exists());

    // A second run reuses the kept maps (not rewritten) and stops the same way.
    let stamp = modified(&cache.join("softedge_000001.png"));
    let again = main_command(&output, &hf_home);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(modified(&cache.join("softedge_000001.png")), stamp);
}

/// The maps kept by a run that stopped for missing models are used once the models are there.
#[test]
fn kept_maps_are_used_when_the_models_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("not-yet-downloaded");
    std::fs::create_dir(&empty).unwrap();
    let models = repo_path("tests/fixtures/pipeline");
    let preset = dir.path().join("tiny.yaml");
    let write_preset = |base: &Path| {
        std::fs::write(
            &preset,
            format!(
                "model: {{base: {}}}\nprompt: x\nresolution: {{width: 64, height: 64}}\n\
                 sampler: {{steps: 2}}\noutput: {{encoder_preset: ultrafast}}\n\
                 controlnets:\n  - {{type: openpose, model: {}}}\n",
                base.display(),
                models.join("controlnet_a").display()
            ),
        )
        .unwrap()
    };
    let output = dir.path().join("o.mp4");
    let run = || {
        capture(
            command(["render"])
                .arg(repo_path("samples/astronaut.mp4"))
                .arg("-p")
                .arg(&preset)
                .arg("-o")
                .arg(&output)
                .args(["--frames", "0..4"])
                .env("ROTOSCOPE_MODELS", models_dir()),
        )
    };

    write_preset(&empty);
    let first = run();
    let err = String::from_utf8_lossy(&first.stderr).into_owned();
    assert_eq!(first.status.code(), Some(2), "{err}");
    assert!(err.contains("model file(s) missing for"), "{err}");
    let kept = dir.path().join("o.mp4.work/preprocess");
    assert!(kept.join("pose_000003_keypoints.json").is_file(), "{err}");

    write_preset(&models);
    let second = run();
    let err = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(0), "{err}");
    assert!(
        err.contains("using the pose / soft-edge maps kept in"),
        "{err}"
    );
    assert_eq!(cli_common::media::ffprobe_frame_count(&output), 4);
    // The work directory, kept maps included, goes once the output is complete.
    assert!(!dir.path().join("o.mp4.work").exists());
}

/// The fast preset's LCM-LoRA is a hub file: offline and not cached, it is listed with the
/// other missing model files, named by its preset field.
#[test]
fn offline_fast_preset_lists_its_hub_lora_with_the_missing_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    std::fs::create_dir(&hf_home).unwrap();
    let output = dir.path().join("out/astronaut-fast.mp4");
    let mut render = command(["render"]);
    render
        .arg(repo_path("samples/astronaut.mp4"))
        .args(["-p", "anime-fast", "-o"])
        .arg(&output)
        .args(["--frames", "0..1"])
        .env("ROTOSCOPE_MODELS", models_dir());
    let result = capture(offline_hub(&mut render, &hf_home));
    let err = String::from_utf8_lossy(&result.stderr).into_owned();
    assert_eq!(result.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let weights = |stem: &str| format!("{stem}.safetensors (or {stem}.fp16.safetensors)");
    let controlnet = vec![
        "config.json".to_string(),
        weights("diffusion_pytorch_model"),
    ];
    let expected = vec![
        (
            // model.vae replaces the base model's VAE: its vae/ files are not needed.
            "stable-diffusion-v1-5/stable-diffusion-v1-5".to_string(),
            vec![
                "unet/config.json".to_string(),
                weights("unet/diffusion_pytorch_model"),
                "text_encoder/config.json".to_string(),
                weights("text_encoder/model"),
                "tokenizer/vocab.json".to_string(),
                "tokenizer/merges.txt".to_string(),
                "tokenizer/tokenizer_config.json".to_string(),
            ],
        ),
        (
            "lllyasviel/control_v11p_sd15_openpose".to_string(),
            controlnet.clone(),
        ),
        (
            "lllyasviel/control_v11p_sd15_softedge".to_string(),
            controlnet,
        ),
        (
            "latent-consistency/lcm-lora-sdv1-5".to_string(),
            vec!["pytorch_lora_weights.safetensors".to_string()],
        ),
    ];
    assert_eq!(missing_lists(&err), expected, "{err}");
    for hint in [
        "loras[0]: 1 model file(s) missing for latent-consistency/lcm-lora-sdv1-5:",
        "huggingface-cli download latent-consistency/lcm-lora-sdv1-5 pytorch_lora_weights.safetensors",
        "rotoscope models fetch -p anime-fast",
    ] {
        assert!(err.contains(hint), "{hint:?} not in {err}");
    }
    assert!(!output.exists());
}
