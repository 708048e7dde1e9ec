//! `TorchGenerator` against `torch.randn` draws saved by scripts/fixtures/noise.py.

use std::path::Path;

use candle_core::{DType, Device};
use rotoscope::noise::{NormalKernel, TorchGenerator};

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    seed: u64,
    dtype: String,
    shapes: Vec<Vec<usize>>,
}

/// torch on x86-64 with AVX2 / AVX-512 (what diffusers users on PCs get).
#[test]
fn randn_matches_torch_avx2_kernel_bit_for_bit() {
    check_against("randn.safetensors", NormalKernel::Avx2);
}

/// torch's portable kernel (`ATEN_CPU_CAPABILITY=default`).
#[test]
fn randn_matches_torch_generic_kernel_bit_for_bit() {
    check_against("randn_generic.safetensors", NormalKernel::Generic);
}

fn check_against(file: &str, kernel: NormalKernel) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/noise");
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let reference =
        candle_core::safetensors::load(dir.join(file), &Device::Cpu).expect("load reference draws");
    assert!(cases.cases.len() >= 10);
    let mut mismatches = Vec::new();
    let mut checked = 0usize;
    for case in &cases.cases {
        let dtype = match case.dtype.as_str() {
            "float32" => DType::F32,
            "float64" => DType::F64,
            other => panic!("unknown dtype {other}"),
        };
        let mut generator = TorchGenerator::with_kernel(case.seed, kernel);
        for (k, shape) in case.shapes.iter().enumerate() {
            let key = format!("{}.{k}", case.name);
            let expected = &reference[&key];
            let ours = generator.randn(shape, dtype, &Device::Cpu).unwrap();
            assert_eq!(ours.dims(), expected.dims(), "{key}: shape");
            let ours = ours.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
            let expected = expected
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap();
            let ours = ours.to_vec1::<f64>().unwrap();
            let expected = expected.to_vec1::<f64>().unwrap();
            let differing = ours
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let max_err = ours
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f64, f64::max);
            checked += ours.len();
            if differing > 0 {
                mismatches.push(format!(
                    "{key}: {differing}/{} values differ, max abs err {max_err:e}",
                    ours.len()
                ));
            }
        }
    }
    assert!(checked > 20_000, "only {checked} values checked");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
