//! Scheduler step sequences against diffusers (fixtures from scripts/fixtures/schedulers.py).

mod tensor_common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rotoscope::diffusion::schedulers::dpmpp_2m::DpmPp2MScheduler;
use rotoscope::diffusion::schedulers::euler::EulerScheduler;
use rotoscope::diffusion::schedulers::euler_ancestral::EulerAncestralScheduler;
use rotoscope::diffusion::schedulers::schedule::{NoiseSchedule, DDPM_BETA_DEFAULTS};
use rotoscope::diffusion::schedulers::{
    self, SamplerOptions, Scheduler, SchedulerConfig, TimestepSpacing,
};
use rotoscope::noise::TorchGenerator;
use rotoscope::preset::SchedulerKind;

use tensor_common::{max_abs, max_abs_diff};

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    kind: String,
    config: serde_json::Value,
    steps: usize,
    strength: f64,
    seed: u64,
    /// `step(eta=...)`; `None`: not passed (DDIM's default 0).
    eta: Option<f64>,
    /// The preset's `sampler.timestep_spacing`, applied on top of `config`.
    timestep_spacing: Option<String>,
    shape: Vec<usize>,
}

fn fixtures() -> (Vec<Case>, HashMap<String, Tensor>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers");
    let cases: Cases =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("steps.safetensors"), &Device::Cpu).unwrap();
    (cases.cases, tensors)
}

/// The model's config, as a scheduler_config.json holds it (without the preset's options).
fn config_of(case: &Case) -> SchedulerConfig {
    SchedulerConfig::from_json_str(&case.config.to_string(), &case.name).unwrap()
}

/// The case's `sampler.eta` and `sampler.timestep_spacing`, as the preset resolves them.
fn options_of(case: &Case) -> SamplerOptions {
    SamplerOptions {
        eta: case.eta,
        timestep_spacing: case.timestep_spacing.as_deref().map(|s| match s {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => panic!("{}: unknown spacing {other}", case.name),
        }),
    }
}

/// The scheduler the renderer builds: the model's config with the preset's options.
fn build(case: &Case) -> Box<dyn Scheduler> {
    let kind = SchedulerKind::from_name(&case.kind).expect("known scheduler kind");
    schedulers::build_with(kind, &config_of(case), &options_of(case)).unwrap()
}

/// The stand-in denoiser used by the fixture: 0.5 sin(x) + 0.1 cos(3x) + 0.05 t / 1000.
fn fake_model(x: &Tensor, t: f64) -> Tensor {
    let a = (x.sin().unwrap() * 0.5).unwrap();
    let b = ((x * 3.0).unwrap().cos().unwrap() * 0.1).unwrap();
    ((a + b).unwrap() + (0.05 * t / 1000.0) as f32 as f64).unwrap()
}

fn vec_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

#[test]
fn timesteps_are_identical_to_diffusers() {
    let (cases, tensors) = fixtures();
    for case in &cases {
        let mut s = build(case);
        s.set_timesteps(case.steps, case.strength).unwrap();
        let expected = vec_f64(&tensors[&format!("{}.timesteps", case.name)]);
        assert_eq!(
            s.timesteps(),
            expected.as_slice(),
            "{}: timesteps",
            case.name
        );
        let sigma = vec_f64(&tensors[&format!("{}.init_noise_sigma", case.name)])[0];
        assert!(
            (s.init_noise_sigma() - sigma).abs() <= 1e-6 * sigma.max(1.0),
            "{}: init_noise_sigma {} vs {sigma}",
            case.name,
            s.init_noise_sigma()
        );
    }
}

/// Betas/alphas_cumprod are bit-exact (torch's linspace and double-accumulated cumprod). The
/// zero-terminal-SNR rescale goes through torch's float sqrt, which (MKL) is not always
/// correctly rounded: there a relative 1e-6 is allowed.
#[test]
fn noise_schedule_tables_match_torch() {
    let (cases, tensors) = fixtures();
    for case in cases.iter().filter(|c| c.kind != "lcm") {
        let config = config_of(case);
        let schedule = NoiseSchedule::from_config(&config, DDPM_BETA_DEFAULTS).unwrap();
        let expected = tensors[&format!("{}.alphas_cumprod", case.name)]
            .to_vec1::<f32>()
            .unwrap();
        let mut ours = schedule.alphas_cumprod.clone();
        assert_eq!(ours.len(), expected.len(), "{}", case.name);
        if config.rescale_betas_zero_snr == Some(true) {
            // Sigma schedulers pin the terminal value to 2^-24 (checked through their sigmas).
            ours[999] = expected[999];
            for (k, (a, b)) in ours.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs(),
                    "{}: alphas_cumprod[{k}] {a} vs {b}",
                    case.name
                );
            }
        } else {
            assert_eq!(ours, expected, "{}: alphas_cumprod", case.name);
        }
    }
}

#[test]
fn sigma_schedules_match() {
    let (cases, tensors) = fixtures();
    for case in &cases {
        let Some(expected) = tensors.get(&format!("{}.sigmas", case.name)) else {
            continue;
        };
        let expected = expected.to_vec1::<f32>().unwrap();
        let config = options_of(case).apply(&config_of(case));
        let ours: Vec<f32> = match case.kind.as_str() {
            "euler" => {
                let mut s = EulerScheduler::new(&config).unwrap();
                s.set_timesteps(case.steps, 1.0).unwrap();
                s.sigmas().to_vec()
            }
            "euler_ancestral" => {
                let mut s = EulerAncestralScheduler::new(&config).unwrap();
                s.set_timesteps(case.steps, 1.0).unwrap();
                s.sigmas().to_vec()
            }
            "dpmpp_2m" | "dpmpp_2m_karras" => {
                let mut s = DpmPp2MScheduler::new(&config, case.kind == "dpmpp_2m_karras").unwrap();
                s.set_timesteps(case.steps, 1.0).unwrap();
                s.sigmas().to_vec()
            }
            other => panic!("unexpected sigmas for {other}"),
        };
        assert_eq!(ours.len(), expected.len(), "{}: sigma count", case.name);
        for (k, (a, b)) in ours.iter().zip(&expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{}: sigma {k}: {a} vs {b}",
                case.name
            );
        }
    }
}

#[test]
fn step_sequences_match_diffusers() {
    let (cases, tensors) = fixtures();
    let mut report = Vec::new();
    for case in &cases {
        let get = |key: &str| tensors[&format!("{}.{key}", case.name)].clone();
        let mut s = build(case);
        s.set_timesteps(case.steps, case.strength).unwrap();
        let mut generator = TorchGenerator::new(case.seed);
        let mut sample = if case.strength >= 1.0 {
            (generator
                .randn(&case.shape, DType::F32, &Device::Cpu)
                .unwrap()
                * s.init_noise_sigma())
            .unwrap()
        } else {
            let noise = generator
                .randn(&case.shape, DType::F32, &Device::Cpu)
                .unwrap();
            s.add_noise(&get("original"), &noise, 0).unwrap()
        };
        let start_err = max_abs_diff(&sample, &get("start"));
        assert!(
            start_err <= 1e-5,
            "{}: start sample err {start_err}",
            case.name
        );
        let mut worst = 0f32;
        let mut worst_rel = 0f32;
        let timesteps = s.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let model_in = s.scale_model_input(&sample, i).unwrap();
            let expected_in = get(&format!("model_in.{i}"));
            let err_in = max_abs_diff(&model_in, &expected_in);
            let out = fake_model(&model_in, t);
            sample = s.step(&out, i, &sample, &mut generator).unwrap();
            let expected = get(&format!("sample.{i}"));
            let err = max_abs_diff(&sample, &expected);
            worst = worst.max(err).max(err_in);
            worst_rel = worst_rel
                .max(err / max_abs(&expected).max(f32::MIN_POSITIVE))
                .max(err_in / max_abs(&expected_in).max(f32::MIN_POSITIVE));
            assert!(
                err <= 1e-4 && err_in <= 1e-4,
                "{}: step {i} (t={t}) sample err {err}, model input err {err_in}",
                case.name
            );
        }
        report.push(format!(
            "{}: {} steps, max abs err {worst:.2e}, max rel err {worst_rel:.2e}",
            case.name,
            timesteps.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn add_noise_matches_at_every_step() {
    let (cases, tensors) = fixtures();
    for case in &cases {
        let get = |key: &str| tensors[&format!("{}.{key}", case.name)].clone();
        let mut s = build(case);
        s.set_timesteps(case.steps, case.strength).unwrap();
        for i in 0..s.timesteps().len() {
            let noised = s.add_noise(&get("original"), &get("noise"), i).unwrap();
            let err = max_abs_diff(&noised, &get(&format!("add_noise.{i}")));
            assert!(
                err <= 1e-5,
                "{}: add_noise at step {i}: err {err}",
                case.name
            );
        }
    }
}
