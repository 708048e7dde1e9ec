#!/usr/bin/env python3
"""OpenVINO reference timings for `rotoscope bench` (developers only), beside bench_torch.py.

For each SD network case, the same diffusers module as bench_torch.py builds (SD1.5 config,
default random initialisation) is converted with `openvino.convert_model(module,
example_input=...)`, saved as IR with f32 weights, and then compiled with
`openvino.Core().compile_model(model, "CPU")` at default settings in a fresh child process
that imports neither torch nor diffusers, so that its peak RSS is OpenVINO's alone (the
conversion's memory is not counted). On a CPU with AVX512-BF16 / AMX the CPU plugin picks bf16
inference by default; the precision it used is reported.

  unet-32 / unet-64   UNet2DConditionModel, batch 2
  controlnet-64       ControlNetModel forward + the UNet with its residuals (two compiled models)
  vae-encode          AutoencoderKL encode of a 512² image (the posterior's mean)
  vae-decode          AutoencoderKL decode of a 64² latent
  taesd-encode        AutoencoderTiny (TAESD config) encode of a 512² image
  taesd-decode        AutoencoderTiny (TAESD config) decode of a 64² latent

Prints one JSON line as bench_torch.py does, with "inference_precision" added; without an
importable openvino it prints {"case": ..., "unavailable": "..."} and exits 0.

Usage: bench_openvino.py CASE [--runs N]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import SD15_CONTROLNET, SD15_UNET, SD15_VAE, TAESD, peak_rss_bytes, time_runs  # noqa: E402

CASES = ["unet-32", "unet-64", "controlnet-64", "vae-encode", "vae-decode", "taesd-encode", "taesd-decode"]


def convert(case, out_dir):
    """Converts the case's module(s) to IR files in out_dir; returns [(file, {input: shape})]."""
    import openvino as ov
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)

    class Unet(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, ehs, *residuals):
            down = list(residuals[:-1]) if residuals else None
            mid = residuals[-1] if residuals else None
            return self.unet(sample, timestep, ehs, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid, return_dict=False)[0]

    class Control(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, sample, timestep, ehs, cond):
            down, mid = self.net(sample, timestep, ehs, controlnet_cond=cond, return_dict=False)
            return (*down, mid)

    class Encode(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, x):
            encoded = self.vae.encode(x)
            return encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mean

    class Decode(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.decode(z).sample

    size = 32 if case == "unet-32" else 64
    sample, t, ehs = torch.randn(2, 4, size, size), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
    parts = []
    if case.startswith("unet-"):
        parts.append(("unet", Unet(UNet2DConditionModel(**SD15_UNET).eval()), (sample, t, ehs)))
    elif case == "controlnet-64":
        control = Control(ControlNetModel(**SD15_CONTROLNET).eval())
        cond = torch.rand(2, 3, 512, 512)
        with torch.inference_mode():
            residuals = control(sample, t, ehs, cond)
        parts.append(("controlnet", control, (sample, t, ehs, cond)))
        parts.append(("unet", Unet(UNet2DConditionModel(**SD15_UNET).eval()), (sample, t, ehs, *residuals)))
    else:
        vae = (AutoencoderTiny(**TAESD) if case.startswith("taesd-") else AutoencoderKL(**SD15_VAE)).eval()
        if case.endswith("-encode"):
            parts.append(("vae_encoder", Encode(vae), (torch.rand(1, 3, 512, 512) * 2 - 1,)))
        else:
            parts.append(("vae_decoder", Decode(vae), (torch.randn(1, 4, 64, 64),)))
    files = []
    for name, module, example in parts:
        with torch.no_grad():
            model = ov.convert_model(module, example_input=example)
        path = os.path.join(out_dir, f"{name}.xml")
        ov.save_model(model, path, compress_to_fp16=False)  # f32 weights, as the other sides
        files.append((path, [list(x.shape) for x in example]))
        del model
    return files


def run_ir(args):
    """The child: compile the IR files with default settings and time them in order (the
    ControlNet's outputs feed the UNet's residual inputs)."""
    import numpy as np
    import openvino as ov

    spec = json.loads(args.run_ir)
    core = ov.Core()
    rng = np.random.default_rng(0)
    stages = []
    for path, shapes in spec["files"]:
        compiled = core.compile_model(path, "CPU")
        inputs = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
        stages.append((compiled, compiled.create_infer_request(), inputs))
    hint = stages[0][0].get_property("INFERENCE_PRECISION_HINT")
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def step():
        previous = None
        for compiled, request, inputs in stages:
            if previous is not None:  # the UNet after the ControlNet: its residuals as inputs
                count = len(previous.model_outputs)
                inputs = inputs[:3] + [previous.get_output_tensor(i).data for i in range(count)]
            request.infer(inputs)
            previous = request

    seconds = time_runs(step, args.runs)
    return seconds, precision


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--run-ir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--models", default=None, help="ignored (bench_torch.py's flag)")
    args = parser.parse_args()

    if args.run_ir:
        seconds, precision = run_ir(args)
        print(json.dumps(dict(seconds=seconds, peak_rss_bytes=peak_rss_bytes(), inference_precision=precision)),
              flush=True)
        return
    try:
        import openvino as ov
    except ImportError as e:
        print(json.dumps(dict(case=args.case, seconds=[], peak_rss_bytes=0,
                              unavailable=f"openvino is not importable ({e})")), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="rotoscope-ov-") as out_dir:
        files = convert(args.case, out_dir)
        child = subprocess.run([sys.executable, __file__, args.case, "--runs", str(args.runs),
                                "--run-ir", json.dumps(dict(files=files))],
                               capture_output=True, text=True)
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            sys.exit(child.returncode)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps(dict(case=args.case, seconds=result["seconds"], median=statistics.median(result["seconds"]),
                          peak_rss_bytes=result["peak_rss_bytes"],
                          inference_precision=result["inference_precision"],
                          reference=f"OpenVINO {ov.get_version()} CPU, default settings "
                                    f"(inference precision {result['inference_precision']})")), flush=True)


if __name__ == "__main__":
    main()
