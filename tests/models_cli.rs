//! `rotoscope models list|fetch` on the real binary: the inventory of a preset using every kind
//! of model reference, and fetching from a local stand-in for the Hugging Face hub.

mod cli_common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs the binary with a controlled hub cache and models directory.
fn rotoscope(args: &[&str], env: &[(&str, &Path)], extra: &[(&str, &str)]) -> Output {
    let mut cmd = cli_common::command(args);
    cmd.env_remove("HF_HOME")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .envs(env.iter().copied())
        .envs(extra.iter().copied());
    cli_common::capture(&mut cmd)
}

fn write_preset(dir: &Path, body: &str) -> PathBuf {
    cli_common::write_preset(dir, "preset.yaml", body)
}

#[test]
fn list_reports_every_needed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hf");
    let models = tmp.path().join("models");
    let f = fixtures();
    let preset = write_preset(
        tmp.path(),
        &format!(
            "model:
  base: {base}
  config: {config}
  vae: vae/missing.safetensors
prompt: a dancer
controlnets:
  - {{ type: openpose, model: {cn} }}
  - {{ type: softedge, model: someone/tiny-softedge }}
loras:
  - {{ path: {lora}, weight: 0.8 }}
  - {{ path: loras/not_here.safetensors }}
embeddings: [{emb}]
preprocess:
  pose: {{ body: true, hands: false, face: false }}
",
            base = f.join("single_file/tiny_sd15.safetensors").display(),
            config = f.join("pipeline").display(),
            cn = f.join("single_file/controlnet").display(),
            lora = f.join("lora/lora_a_kohya.safetensors").display(),
            emb = f.join("prompt/tinyemb.safetensors").display(),
        ),
    );
    let out = rotoscope(
        &["models", "list", "-p", preset.to_str().unwrap(), "--json"],
        &[("HF_HUB_CACHE", &cache), ("ROTOSCOPE_MODELS", &models)],
        &[],
    );
    let text = cli_common::assert_ok(&out);
    let report: Value = serde_json::from_str(&text).unwrap();
    let files = report["presets"][0]["files"].as_array().unwrap();
    let find = |role: &str, file: &str| -> &Value {
        files
            .iter()
            .find(|e| {
                e["role"].as_str().unwrap().starts_with(role)
                    && e["file"].as_str().unwrap().contains(file)
            })
            .unwrap_or_else(|| panic!("no entry {role} {file} in {text}"))
    };
    let base = find("model.base", "tiny_sd15.safetensors");
    assert_eq!(base["present"], true);
    let size = std::fs::metadata(f.join("single_file/tiny_sd15.safetensors"))
        .unwrap()
        .len();
    assert_eq!(base["size"].as_u64(), Some(size));
    assert_eq!(find("model.config", "vocab.json")["present"], true);
    let vae = find("model.vae", "missing.safetensors");
    assert_eq!(
        (vae["present"].clone(), vae["origin"].clone()),
        (Value::Bool(false), Value::from("user"))
    );
    assert_eq!(find("controlnets[0]", "config.json")["present"], true);
    assert_eq!(
        find("controlnets[0]", "diffusion_pytorch_model.fp16.safetensors")["present"],
        true
    );
    let hub_cn = find("controlnets[1]", "config.json");
    assert_eq!(
        (hub_cn["present"].clone(), hub_cn["origin"].clone()),
        (Value::Bool(false), Value::from("hub"))
    );
    assert_eq!(find("loras[0]", "lora_a_kohya")["present"], true);
    assert_eq!(find("loras[1]", "not_here")["present"], false);
    assert_eq!(find("embeddings[0]", "tinyemb")["present"], true);
    let pose = find("preprocess.pose", "pose_landmark_full.tflite");
    assert_eq!(pose["origin"], "fetch_script");
    assert!(
        !text.contains("hand_landmark_full"),
        "hands are off in this preset"
    );
    assert_eq!(
        find("preprocess.softedge", "hed.safetensors")["present"],
        false
    );
    let missing = files.iter().filter(|e| e["present"] == false).count();
    assert_eq!(report["missing"].as_u64(), Some(missing as u64));

    // The text form says what is missing and how to get it.
    let out = rotoscope(
        &["models", "list", "-p", preset.to_str().unwrap()],
        &[("HF_HUB_CACHE", &cache), ("ROTOSCOPE_MODELS", &models)],
        &[],
    );
    let text = cli_common::assert_ok(&out);
    assert!(
        text.contains(&format!("{missing} file(s) missing")),
        "{text}"
    );
    assert!(text.contains("rotoscope models fetch"), "{text}");
    assert!(text.contains("scripts/fetch-models.sh"), "{text}");
}

#[test]
fn bundled_presets_are_listed_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let out = rotoscope(
        &["models", "list", "--json"],
        &[
            ("HF_HUB_CACHE", tmp.path()),
            ("ROTOSCOPE_MODELS", tmp.path()),
        ],
        &[],
    );
    let report: Value = serde_json::from_str(&cli_common::assert_ok(&out)).unwrap();
    let names: Vec<&str> = report["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["preset"].as_str().unwrap())
        .collect();
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
    let text = serde_json::to_string(&report).unwrap();
    assert!(text.contains("guoyww/animatediff-motion-adapter-v1-5-2"));
    assert!(text.contains("\"temporal.motion_module\""));
    assert!(text.contains("stable-diffusion-v1-5/stable-diffusion-v1-5"));
    assert!(text.contains("unet/diffusion_pytorch_model.safetensors"));
    // anime-fast's LCM-LoRA is a hub file, listed with the hub files.
    assert!(text.contains("latent-consistency/lcm-lora-sdv1-5"));
    assert!(text.contains("\"pytorch_lora_weights.safetensors\""));
    assert!(text.contains("madebyollin/taesd"));
}

/// A minimal stand-in for huggingface.co's `resolve` endpoint, speaking the subset of HTTP
/// hf-hub uses (GET with a Range header, etag / x-repo-commit / content-range headers).
fn serve_hub(files: HashMap<String, Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().to_string());
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            log.lock().unwrap().push(path.clone());
            let response = match files.get(&path) {
                None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_vec(),
                Some(body) => {
                    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
                        Some((a, b)) => {
                            let a: usize = a.parse().unwrap_or(0);
                            let b = b.parse().unwrap_or(body.len() - 1).min(body.len() - 1);
                            (a, b)
                        }
                        None => (0, body.len() - 1),
                    };
                    let mut r = format!(
                        "HTTP/1.1 206 Partial Content\r\netag: \"e{}\"\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\ncontent-range: bytes {start}-{end}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len(),
                        body.len(),
                        end + 1 - start
                    )
                    .into_bytes();
                    r.extend_from_slice(&body[start..=end]);
                    r
                }
            };
            let _ = stream.write_all(&response);
            let _ = reader.read_to_end(&mut Vec::new());
        }
    });
    (endpoint, requests)
}

#[test]
fn fetch_downloads_missing_hub_files_into_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hf");
    let models = tmp.path().join("models");
    let cn = fixtures().join("single_file/controlnet");
    let config = std::fs::read(cn.join("config.json")).unwrap();
    let weights = std::fs::read(cn.join("diffusion_pytorch_model.fp16.safetensors")).unwrap();
    let mut files = HashMap::new();
    files.insert(
        "/tiny/controlnet/resolve/main/config.json".to_string(),
        config.clone(),
    );
    files.insert(
        "/tiny/controlnet/resolve/main/diffusion_pytorch_model.fp16.safetensors".to_string(),
        weights.clone(),
    );
    let (endpoint, requests) = serve_hub(files);
    let base = fixtures().join("pipeline");
    let preset = write_preset(
        tmp.path(),
        &format!(
            "model:\n  base: {}\nprompt: a dancer\ncontrolnets:\n  - {{ type: softedge, model: tiny/controlnet }}\n",
            base.display()
        ),
    );
    let env = [
        ("HF_HUB_CACHE", cache.as_path()),
        ("ROTOSCOPE_MODELS", models.as_path()),
    ];
    let hub = [("HF_ENDPOINT", endpoint.as_str())];

    // Before: the hub files are missing.
    let list =
        |out: Output| -> Value { serde_json::from_str(&cli_common::assert_ok(&out)).unwrap() };
    let before = list(rotoscope(
        &["models", "list", "-p", preset.to_str().unwrap(), "--json"],
        &env,
        &[],
    ));
    let hub_missing = |report: &Value| {
        report["presets"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["origin"] == "hub" && e["present"] == false)
            .count()
    };
    assert_eq!(hub_missing(&before), 2);

    // Fetch: the hub files arrive; HED weights cannot be downloaded, so the command still
    // fails, naming them and the script that installs them.
    let out = rotoscope(
        &["models", "fetch", "-p", preset.to_str().unwrap()],
        &env,
        &hub,
    );
    let err = cli_common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hed.safetensors") && err.contains("scripts/fetch-models.sh"),
        "{err}"
    );
    assert!(!err.contains("tiny/controlnet:"), "{err}");
    let seen = requests.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|p| p.ends_with("/diffusion_pytorch_model.safetensors")),
        "fp32 tried first: {seen:?}"
    );

    let after = list(rotoscope(
        &["models", "list", "-p", preset.to_str().unwrap(), "--json"],
        &env,
        &[],
    ));
    assert_eq!(hub_missing(&after), 0);
    let entries = after["presets"][0]["files"].as_array().unwrap();
    let fetched = entries
        .iter()
        .find(|e| e["file"] == "diffusion_pytorch_model.fp16.safetensors")
        .unwrap();
    let path = PathBuf::from(fetched["path"].as_str().unwrap());
    assert!(path.starts_with(&cache), "{path:?}");
    assert_eq!(std::fs::read(&path).unwrap(), weights);

    // Offline with nothing cached: a clear list of what is missing and how to get it.
    let empty = tmp.path().join("empty-hf");
    let out = rotoscope(
        &["models", "fetch", "-p", preset.to_str().unwrap()],
        &[
            ("HF_HUB_CACHE", empty.as_path()),
            ("ROTOSCOPE_MODELS", models.as_path()),
        ],
        &[("HF_HUB_OFFLINE", "1")],
    );
    let err = cli_common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tiny/controlnet"), "{err}");
    assert!(err.contains("config.json"), "{err}");
    assert!(
        err.contains("huggingface-cli download tiny/controlnet"),
        "{err}"
    );
}

#[test]
fn fetch_downloads_a_hub_lora_into_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hf");
    let models = tmp.path().join("models");
    let lora = std::fs::read(fixtures().join("lora/lora_a_kohya.safetensors")).unwrap();
    let mut files = HashMap::new();
    files.insert(
        "/tiny/lcm-lora/resolve/main/pytorch_lora_weights.safetensors".to_string(),
        lora.clone(),
    );
    files.insert(
        "/tiny/loras/resolve/main/styles/ink.safetensors".to_string(),
        lora.clone(),
    );
    let (endpoint, requests) = serve_hub(files);
    let preset = write_preset(
        tmp.path(),
        &format!(
            "model:\n  base: {}\nprompt: a dancer\nloras:\n  - {{ path: tiny/lcm-lora }}\n  - {{ path: tiny/loras/styles/ink.safetensors, weight: 0.5 }}\n",
            fixtures().join("pipeline").display()
        ),
    );
    let env = [
        ("HF_HUB_CACHE", cache.as_path()),
        ("ROTOSCOPE_MODELS", models.as_path()),
    ];
    let list = || -> Vec<Value> {
        let out = rotoscope(
            &["models", "list", "-p", preset.to_str().unwrap(), "--json"],
            &env,
            &[],
        );
        let report: Value = serde_json::from_str(&cli_common::assert_ok(&out)).unwrap();
        report["presets"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["role"].as_str().unwrap().starts_with("loras["))
            .cloned()
            .collect()
    };
    let before = list();
    assert_eq!(before.len(), 2);
    assert_eq!(before[0]["file"], "pytorch_lora_weights.safetensors");
    assert_eq!(before[1]["file"], "styles/ink.safetensors");
    assert!(before
        .iter()
        .all(|e| e["origin"] == "hub" && e["present"] == false));

    let out = rotoscope(
        &["models", "fetch", "-p", preset.to_str().unwrap()],
        &env,
        &[("HF_ENDPOINT", endpoint.as_str())],
    );
    let err = cli_common::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let seen = requests.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|p| p == "/tiny/lcm-lora/resolve/main/pytorch_lora_weights.safetensors"),
        "{seen:?}"
    );
    for entry in list() {
        assert_eq!(entry["present"], true, "{entry}");
        let path = PathBuf::from(entry["path"].as_str().unwrap());
        assert!(path.starts_with(&cache), "{path:?}");
        assert_eq!(std::fs::read(&path).unwrap(), lora);
    }
}
