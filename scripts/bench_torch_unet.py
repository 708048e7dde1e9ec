#!/usr/bin/env python3
"""Reference timing for benches/unet_step.rs: one SD1.5 UNet step with diffusers on torch CPU.

Random (default-initialised) weights, fp32, no grad, 2 threads, batch 2 with 77 text tokens.
Prints one JSON object per latent size:
  {"latent_size": 32, "batch": 2, "seconds": [...], "median": s, "peak_rss_bytes": n}
Usage: bench_torch_unet.py [--sizes 32 64] [--runs 3] [--threads 2]
"""
import argparse
import json
import resource
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

SD15 = dict(
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=64,
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15).eval()
    with torch.no_grad():
        for size in args.sizes:
            sample = torch.randn(args.batch, 4, size, size)
            ehs = torch.randn(args.batch, 77, 768)
            unet(sample, 500, ehs)  # warm-up
            seconds = []
            for _ in range(args.runs):
                start = time.perf_counter()
                unet(sample, 500, ehs)
                seconds.append(time.perf_counter() - start)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(json.dumps(dict(latent_size=size, batch=args.batch, seconds=seconds,
                                  median=statistics.median(seconds), peak_rss_bytes=peak)), flush=True)


if __name__ == "__main__":
    main()
