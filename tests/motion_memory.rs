//! Memory of AnimateDiff context windows: denoising a 64-frame batch in windows of 16 needs
//! about as much memory as a 16-frame batch, because only one window's activations exist at a
//! time (the latents of all frames are small next to them).
//!
//! Each measurement runs in a child process (this test binary re-run on the ignored
//! `measure_child` test) so that its peak RSS, read from `wait4`'s rusage, is its own. The
//! models are a narrow SD1.5-shaped UNet (4 blocks of 16/32/64/64 channels, cross-attention in
//! the first three), its motion modules and a ControlNet, with random weights, at 256×256
//! (32×32 latents), with classifier-free guidance, one DDIM step. (Narrow so that the test
//! stays fast: activation memory grows with channels, compute with their square.)

use std::process::{Command, Stdio};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rotoscope::bench::unet::random_var_builder;
use rotoscope::diffusion::sampler::TextConditioning;
use rotoscope::diffusion::schedulers::{self, SchedulerConfig};
use rotoscope::diffusion::{denoise_video, VideoControl, VideoDenoiseRequest};
use rotoscope::models::controlnet::{ControlNetConfig, ControlNetModel};
use rotoscope::models::motion::{
    MotionAdapterConfig, MotionLayout, MotionModules, PositionalEncoding,
};
use rotoscope::models::unet::{UNet2DConditionModel, UNetConfig};
use rotoscope::noise::TorchGenerator;
use rotoscope::preset::motion::ContextOptions;
use rotoscope::preset::motion::ContextWeighting;
use rotoscope::preset::SchedulerKind;

const CHILD_ENV: &str = "ROTOSCOPE_MOTION_MEMORY_RUN";
const LATENT: usize = 32;

const UNET_CONFIG: &str = r#"{
  "block_out_channels": [16, 32, 64, 64],
  "layers_per_block": 1,
  "attention_head_dim": 1,
  "cross_attention_dim": 32,
  "norm_num_groups": 16,
  "in_channels": 4,
  "out_channels": 4,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "conditioning_embedding_out_channels": [16, 32, 96, 256]
}"#;

const ADAPTER_CONFIG: &str = r#"{
  "block_out_channels": [16, 32, 64, 64],
  "motion_layers_per_block": 1,
  "motion_num_attention_heads": 2,
  "motion_max_seq_length": 32
}"#;

/// Runs one denoising step over `frames` frames in windows of `window` frames.
fn run(frames: usize, window: usize) {
    let device = Device::Cpu;
    let config: UNetConfig = serde_json::from_str(UNET_CONFIG).unwrap();
    config.validate().unwrap();
    let unet = UNet2DConditionModel::load(random_var_builder(), &config).unwrap();
    let cn_config =
        ControlNetConfig::from_json(&serde_json::from_str(UNET_CONFIG).unwrap()).unwrap();
    let controlnet = ControlNetModel::load(random_var_builder(), &cn_config).unwrap();
    let adapter: MotionAdapterConfig = serde_json::from_str(ADAPTER_CONFIG).unwrap();
    let layout =
        MotionLayout::from_config(&config, &adapter, PositionalEncoding::Computed).unwrap();
    let motion = MotionModules::load(random_var_builder(), &layout).unwrap();

    let text = TextConditioning {
        cond: Tensor::randn(0f32, 1.0, (1, 77, 32), &device).unwrap(),
        uncond: Some(Tensor::randn(0f32, 1.0, (1, 77, 32), &device).unwrap()),
    };
    let size = (LATENT * 8) as u32;
    let poses: Vec<RgbImage> = (0..frames)
        .map(|f| {
            RgbImage::from_fn(size, size, |x, y| {
                image::Rgb([(x + f as u32) as u8, y as u8, 0])
            })
        })
        .collect();
    let controls = [VideoControl {
        model: &controlnet,
        frames: &poses,
        scale: 1.0,
        start: 0.0,
        end: 1.0,
        guess_mode: false,
    }];
    let request = VideoDenoiseRequest {
        unet: &unet,
        motion: &motion,
        text: &text,
        guidance_scale: 5.0,
        controls: &controls,
        context: ContextOptions {
            length: window,
            overlap: 4,
            weighting: ContextWeighting::Pyramid,
        },
        stop: None,
    };
    let mut scheduler = schedulers::build(SchedulerKind::Ddim, &SchedulerConfig::sd15()).unwrap();
    scheduler.set_timesteps(1, 1.0).unwrap();
    let mut generator = TorchGenerator::new(0);
    let latents = generator
        .randn(&[1, 4, frames, LATENT, LATENT], DType::F32, &device)
        .unwrap();
    let out = denoise_video(
        &request,
        scheduler.as_mut(),
        latents,
        &mut generator,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.dims(), &[1, 4, frames, LATENT, LATENT]);
}

/// Not a test of its own: the body of one measurement, run by `peak_memory_follows_the_window`.
#[test]
#[ignore]
fn measure_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (frames, window) = spec.split_once(':').unwrap();
    run(frames.parse().unwrap(), window.parse().unwrap());
}

/// Peak RSS in MiB of a child running `frames` frames in windows of `window`.
fn peak_rss_mib(frames: usize, window: usize) -> f64 {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "measure_child",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, format!("{frames}:{window}"))
        // glibc raises its mmap threshold whenever a large block is freed, so later large
        // tensors come from the heap and fragment it: without pinning the threshold a run of
        // five windows peaks ~14 % above a run of one from allocator fragmentation alone.
        // Pinned to glibc's initial default (128 KiB), the comparison measures the sampler.
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers; the Child is not waited on again.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "measurement {frames} frames / window {window} failed"
    );
    usage.ru_maxrss as f64 / 1024.0 // KiB on Linux
}

#[test]
fn peak_memory_follows_the_window() {
    let started = std::time::Instant::now();
    let short = peak_rss_mib(16, 16);
    let long = peak_rss_mib(64, 16);
    // One window of 32 frames (the motion module's longest sequence), for contrast.
    let unwindowed = peak_rss_mib(32, 32);
    eprintln!(
        "peak RSS: 16 frames {short:.0} MiB, 64 frames in windows of 16 {long:.0} MiB, \
         32 frames in one window {unwindowed:.0} MiB ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    // 48 more frames of latents, control images and per-frame averages are a few MiB.
    assert!(
        long <= short * 1.1 + 8.0,
        "64 frames in windows of 16 peak at {long:.0} MiB vs {short:.0} MiB for 16 frames"
    );
    // The measurement can tell: a window twice as long needs clearly more.
    assert!(
        unwindowed > long * 1.3,
        "one 32-frame window peaks at {unwindowed:.0} MiB, windows of 16 at {long:.0} MiB"
    );
}
