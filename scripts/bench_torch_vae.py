#!/usr/bin/env python3
"""Reference timing: diffusers AutoencoderKL decode on torch CPU at SD1.5 shapes, random weights.

Usage: bench_torch_vae.py [--size 512] [--runs 2] [--threads N] [--encode]
Prints one JSON line: {"op": "decode", "size": 512, "seconds": [...], "best": s, "cpu_seconds": [...],
"best_cpu": s, "peak_rss_mb": m} (CPU = user + system time of all threads, less sensitive than wall
time to other load on a shared machine; peak RSS includes the ~335 MB of fp32 weights). benches/vae_decode.rs runs this in the same
session as the Rust timing and prints the ratio. Developers only; needs the pinned stack in
scripts/requirements-fixtures.txt.
"""
import argparse
import json
import resource
import time

import torch
from diffusers import AutoencoderKL

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--encode", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE).eval()
    latent = args.size // 8
    times, cpu_times = [], []

    def cpu_now():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    with torch.inference_mode():
        for _ in range(args.runs):
            if args.encode:
                x = torch.rand(1, 3, args.size, args.size) * 2 - 1
                start, cpu_start = time.perf_counter(), cpu_now()
                vae.encode(x).latent_dist.mean
            else:
                z = torch.randn(1, 4, latent, latent)
                start, cpu_start = time.perf_counter(), cpu_now()
                vae.decode(z).sample
            times.append(time.perf_counter() - start)
            cpu_times.append(cpu_now() - cpu_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "op": "encode" if args.encode else "decode",
        "size": args.size,
        "threads": torch.get_num_threads(),
        "seconds": [round(t, 3) for t in times],
        "best": round(min(times), 3),
        "cpu_seconds": [round(t, 3) for t in cpu_times],
        "best_cpu": round(min(cpu_times), 3),
        "peak_rss_mb": round(peak, 1),
    }))


if __name__ == "__main__":
    main()
