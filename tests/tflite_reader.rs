//! The `.tflite` reader against TFLite itself: sparse weights densified exactly as TFLite's
//! DENSIFY + DEQUANTIZE produce them (real pose_detection model, and hand-built block-sparse
//! models run through TFLite), and clear errors for unsupported or broken files.
//! Fixtures: scripts/fixtures/tflite.py. Models: scripts/fetch-models.sh.

mod models_common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rotoscope::tflite::{TfliteError, TfliteModel};
use safetensors::SafeTensors;

use models_common::models_dir;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tflite")
}

fn read_f32(st: &SafeTensors, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(key).unwrap();
    let values = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), values)
}

#[test]
fn pose_detection_sparse_weights_densify_like_tflite() {
    let path = models_dir().join("mediapipe/pose_detection.tflite");
    assert!(
        path.is_file(),
        "missing {} — run scripts/fetch-models.sh",
        path.display()
    );
    let model = TfliteModel::load(&path).unwrap();
    let bytes = std::fs::read(fixture_dir().join("pose_detection_densified.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert!(!names.is_empty());
    for name in names {
        let (shape, want) = read_f32(&st, name);
        let got = model
            .constant(name)
            .unwrap_or_else(|| panic!("no folded constant named {name}"));
        assert_eq!(got.shape, shape, "{name}");
        // float16 -> f32 is exact, so the dense values must be identical.
        assert_eq!(got.data, want, "{name}");
        assert!(
            want.contains(&0.0) && want.iter().any(|&v| v != 0.0),
            "{name} should be sparse"
        );
    }
}

#[test]
fn block_sparse_weights_match_tflite() {
    let bytes = std::fs::read(fixture_dir().join("tiny_models.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in ["sparse_fc_block_1x4", "sparse_fc_block_2x2"] {
        let model = TfliteModel::load(fixture_dir().join(format!("{name}.tflite"))).unwrap();
        let (in_shape, input) = read_f32(&st, &format!("{name}.input"));
        let (_, want) = read_f32(&st, &format!("{name}.output"));
        let x = Tensor::from_vec(input, in_shape, &Device::Cpu).unwrap();
        let got = model.run(&[x]).unwrap()[0]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "{name}: {got:?} vs {want:?}");
        }
    }
}

/// Models are shared between the preprocessing threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<TfliteModel>();
};

#[test]
fn unsupported_operator_names_model_and_op() {
    let path = fixture_dir().join("unsupported_softmax.tflite");
    let err = TfliteModel::load(&path).unwrap_err();
    assert!(
        matches!(err, TfliteError::UnsupportedOp { ref op, index: 0, .. } if op == "SOFTMAX"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("unsupported_softmax.tflite") && message.contains("SOFTMAX"),
        "{message}"
    );
}

#[test]
fn missing_and_truncated_files_are_reported() {
    let missing = fixture_dir().join("no_such_model.tflite");
    let err = TfliteModel::load(&missing).unwrap_err();
    assert!(matches!(err, TfliteError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_model.tflite"));

    let bytes = std::fs::read(fixture_dir().join("sparse_fc_block_1x4.tflite")).unwrap();
    let err = TfliteModel::from_bytes(&bytes[..bytes.len() / 2], PathBuf::from("half.tflite"))
        .unwrap_err();
    assert!(matches!(err, TfliteError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("half.tflite"));

    let err = TfliteModel::from_bytes(b"not a flatbuffer at all", PathBuf::from("junk.tflite"))
        .unwrap_err();
    assert!(matches!(err, TfliteError::Malformed { .. }), "{err:?}");
}
