//! Every layer of `rotoscope::nn`, and whole UNet, VAE (KL and tiny) and ControlNet forwards,
//! through the fast CPU kernels and through the portable candle-ops path (the one other devices
//! run), on the CPU: the two must agree within 1e-5 relative.

mod fixture_common;
mod tensor_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rotoscope::models::autoencoder_tiny::{AutoencoderTiny, AutoencoderTinyConfig};
use rotoscope::models::controlnet::{ControlNetConfig, ControlNetModel};
use rotoscope::models::unet::{UNet2DConditionModel, UNetConfig, UNetExtras};
use rotoscope::models::vae::{AutoencoderKL, VaeConfig};
use rotoscope::nn::attention::multi_head_attention;
use rotoscope::nn::conv2d::Conv2d;
use rotoscope::nn::conv3x3::{Conv3x3, DownsampleConv3x3, Upsample2xConv3x3};
use rotoscope::nn::feed_forward::{geglu, FeedForward};
use rotoscope::nn::group_norm::GroupNorm;
use rotoscope::nn::linear::Linear;
use rotoscope::nn::{with_kernel_path, AttentionBudget, KernelPath};

use tensor_common::{max_abs, max_abs_diff};

const TOLERANCE: f32 = 1e-5;

/// `max |a − b| / max(max |a|, tiny)`.
fn relative_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs_diff(a, b) / max_abs(a).max(f32::MIN_POSITIVE)
}

/// Runs `f` on both paths and checks that they agree (and computed something).
fn both_paths(name: &str, f: impl Fn() -> Vec<Tensor>) {
    let fast = with_kernel_path(KernelPath::Fast, &f);
    let portable = with_kernel_path(KernelPath::Portable, &f);
    assert_eq!(fast.len(), portable.len(), "{name}");
    for (i, (a, b)) in fast.iter().zip(&portable).enumerate() {
        assert_eq!(a.dims(), b.dims(), "{name}[{i}]");
        let peak = a.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        assert!(
            peak.to_scalar::<f32>().unwrap() > 0.0,
            "{name}[{i}]: all zero"
        );
        let rel = relative_diff(a, b);
        println!("{name}[{i}]: relative difference {rel:.2e}");
        assert!(
            rel <= TOLERANCE,
            "{name}[{i}]: relative difference {rel:.3e}"
        );
    }
}

fn randn(shape: &[usize], std: f32) -> Tensor {
    Tensor::randn(0f32, std, shape, &Device::Cpu).unwrap()
}

#[test]
fn linear_every_layout() {
    let w = randn(&[48, 40], 0.2);
    let bias = randn(&[48], 1.0);
    let with_bias = Linear::new(w.clone(), Some(bias)).unwrap();
    let no_bias = Linear::new(w, None).unwrap();
    let tokens = randn(&[2, 77, 40], 1.0);
    let residual = randn(&[2, 77, 48], 1.0);
    let image = randn(&[2, 40, 6, 5], 1.0);
    let image_tokens = randn(&[2, 30, 40], 1.0);
    let image_residual = randn(&[2, 48, 6, 5], 1.0);
    both_paths("linear", || {
        vec![
            with_bias.forward_add(&tokens, None).unwrap(),
            with_bias.forward_add(&tokens, Some(&residual)).unwrap(),
            no_bias.forward_add(&tokens, None).unwrap(),
            with_bias.forward_from_channels_first(&image).unwrap(),
            with_bias
                .forward_to_channels_first_add(&image_tokens, &image_residual)
                .unwrap(),
        ]
    });
}

#[test]
fn conv2d_as_the_networks_use_it() {
    // (in, out, kernel, stride, padding, side): conv_in / resnet convs below and above the
    // shifted-GEMM threshold (32² pixels), the UNet's stride-2 downsampler, 1×1 shortcuts.
    for (c_in, c_out, k, s, p, side) in [
        (4, 8, 3, 1, 1, 12),
        (6, 8, 3, 1, 1, 36),
        (8, 8, 3, 2, 1, 13),
        (8, 12, 1, 1, 0, 9),
        (3, 5, 3, 1, 0, 10),
    ] {
        let weight = randn(&[c_out, c_in, k, k], 0.3);
        let conv = Conv2d::new(&weight, Some(randn(&[c_out], 1.0)), s, p).unwrap();
        let x = randn(&[2, c_in, side, side], 1.0);
        let offset = randn(&[2, c_out], 1.0);
        let out_side = (side + 2 * p - k) / s + 1;
        let residual = randn(&[2, c_out, out_side, out_side], 1.0);
        both_paths(&format!("conv2d k{k} s{s} p{p} {side}²"), || {
            vec![
                conv.forward_with_offset(&x, None).unwrap(),
                conv.forward_fused(&x, Some(&offset), Some(&residual))
                    .unwrap(),
            ]
        });
    }
}

#[test]
fn conv3x3_downsample_and_upsample() {
    let weight = randn(&[6, 5, 3, 3], 0.3);
    let bias = randn(&[6], 1.0);
    let conv = Conv3x3::new(&weight, Some(&bias)).unwrap();
    let down = DownsampleConv3x3::new(&weight, Some(&bias)).unwrap();
    let up = Upsample2xConv3x3::new(&weight, &bias).unwrap();
    let x = randn(&[2, 5, 17, 14], 1.0);
    let offset = randn(&[2, 6], 1.0);
    let residual = randn(&[2, 6, 17, 14], 1.0);
    both_paths("conv3x3", || {
        vec![
            conv.forward(&x).unwrap(),
            conv.forward_fused(&x, Some(&offset), Some(&residual))
                .unwrap(),
            down.forward(&x).unwrap(),
            up.forward(&x).unwrap(),
        ]
    });
}

#[test]
fn group_norm_with_and_without_silu() {
    let norm = GroupNorm::new(randn(&[32], 0.3), randn(&[32], 0.3), 8, 1e-6).unwrap();
    let x = randn(&[2, 32, 9, 7], 2.0).affine(1.0, 3.0).unwrap();
    let frames = randn(&[1, 32, 4, 3, 5], 1.0);
    both_paths("group norm", || {
        vec![
            norm.forward(&x).unwrap(),
            norm.forward_silu(&x).unwrap(),
            norm.forward(&frames).unwrap(),
        ]
    });
}

#[test]
fn attention_self_cross_and_long_keys() {
    let budget = AttentionBudget::default();
    // Self-attention (more keys than one fused key block), cross-attention to 77 text tokens,
    // and a budget small enough that the portable path chunks queries and keys.
    let q = randn(&[2, 1100, 2 * 40], 1.0);
    let kv = randn(&[2, 1100, 2 * 40], 1.0);
    let text = randn(&[2, 77, 2 * 40], 1.0);
    let small = randn(&[1, 50, 3 * 8], 2.0);
    both_paths("attention", || {
        vec![
            multi_head_attention(&q, &kv, &kv, 2, budget).unwrap(),
            multi_head_attention(&q, &text, &text, 2, budget).unwrap(),
            multi_head_attention(
                &small,
                &small,
                &small,
                3,
                AttentionBudget { max_scores: 64 },
            )
            .unwrap(),
        ]
    });
}

#[test]
fn feed_forward_geglu() {
    let dim = 24;
    let tensors = HashMap::from([
        (
            "ff.net.0.proj.weight".to_string(),
            randn(&[8 * dim, dim], 0.2),
        ),
        ("ff.net.0.proj.bias".to_string(), randn(&[8 * dim], 0.5)),
        ("ff.net.2.weight".to_string(), randn(&[dim, 4 * dim], 0.2)),
        ("ff.net.2.bias".to_string(), randn(&[dim], 0.5)),
    ]);
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let ff = FeedForward::load(vb.pp("ff"), dim).unwrap();
    let x = randn(&[2, 33, dim], 1.0);
    let residual = randn(&[2, 33, dim], 1.0);
    let h = randn(&[3, 17, 2 * 20], 2.0);
    both_paths("feed-forward", || {
        vec![ff.forward(&x, &residual).unwrap(), geglu(&h, 20).unwrap()]
    });
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn detached_vb(file: PathBuf) -> VarBuilder<'static> {
    let tensors = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
}

fn io(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(file), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_vec1::<f32>().unwrap()[0] as f64
}

#[test]
fn unet_forward() {
    let dir = fixtures().join("unet/sd15");
    let config = UNetConfig::from_file(dir.join("config.json")).unwrap();
    let weights = fixture_common::unet_weights(&dir);
    let unet = UNet2DConditionModel::load(detached_vb(weights), &config).unwrap();
    let io = io("unet/io.safetensors");
    both_paths("unet", || {
        vec![unet
            .forward(
                &io["sd15.sample"],
                scalar(&io["sd15.timestep"]),
                &io["sd15.encoder_hidden_states"],
                &UNetExtras::default(),
            )
            .unwrap()]
    });
}

#[test]
fn vae_decode_and_encode() {
    let dir = fixtures().join("vae/tiny");
    let config = VaeConfig::from_file(dir.join("config.json")).unwrap();
    let vae = AutoencoderKL::load(
        detached_vb(dir.join("diffusion_pytorch_model.safetensors")),
        &config,
    )
    .unwrap();
    let r = io("vae/reference.safetensors");
    both_paths("vae", || {
        let dist = vae.encode(&r["image"]).unwrap();
        vec![vae.decode(&r["latents"]).unwrap(), dist.mean, dist.logvar]
    });
}

#[test]
fn tiny_vae_decode_and_encode() {
    let dir = fixtures().join("vae_tiny/tiny");
    let config = AutoencoderTinyConfig::from_file(dir.join("config.json")).unwrap();
    let vae = AutoencoderTiny::load(
        detached_vb(dir.join("diffusion_pytorch_model.safetensors")),
        &config,
    )
    .unwrap();
    let r = io("vae_tiny/reference.safetensors");
    both_paths("vae_tiny", || {
        vec![
            vae.decode(&r["latents"]).unwrap(),
            vae.encode(&r["image"]).unwrap(),
        ]
    });
}

#[test]
fn controlnet_forward() {
    let dir = fixtures().join("controlnet/sd15");
    let config = ControlNetConfig::from_file(dir.join("config.json")).unwrap();
    let net = ControlNetModel::load(
        detached_vb(dir.join("diffusion_pytorch_model.fp16.safetensors")),
        &config,
    )
    .unwrap();
    let io = io("controlnet/io.safetensors");
    both_paths("controlnet", || {
        let out = net
            .forward(
                &io["sample"],
                scalar(&io["timestep"]),
                &io["encoder_hidden_states"],
                &io["controlnet_cond"],
                0.7,
                false,
            )
            .unwrap();
        let mut all = out.down_residuals;
        all.push(out.mid_residual);
        all
    });
}
