#!/usr/bin/env python3
"""Write an SD1.5-sized diffusers folder with random weights (fp16 files) plus an openpose-shaped
ControlNet, to time `rotoscope render` at real sizes without real weights (README "Performance").

Usage: bench_sd15_folder.py OUT_DIR      (about 2.9 GB; /dev/shm keeps it off the disk)
The tokenizer and scheduler config are copied from tests/fixtures/pipeline (the tokenizer's ids
fit the real vocabulary size); the text encoder has SD1.5's CLIP ViT-L/14 text shape.
"""
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
from bench_torch import SD15_CONTROLNET, SD15_UNET, SD15_VAE  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "pipeline")


def main(out):
    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(FIXTURE, "model_index.json"), out)
    for part in ["tokenizer", "scheduler"]:
        shutil.copytree(os.path.join(FIXTURE, part), os.path.join(out, part), dirs_exist_ok=True)
    save = dict(variant="fp16", safe_serialization=True)
    UNet2DConditionModel(**SD15_UNET).half().save_pretrained(os.path.join(out, "unet"), **save)
    AutoencoderKL(**SD15_VAE).half().save_pretrained(os.path.join(out, "vae"), **save)
    ControlNetModel(**SD15_CONTROLNET).half().save_pretrained(os.path.join(out, "controlnet"), **save)
    tiny = CLIPTextConfig.from_pretrained(os.path.join(FIXTURE, "text_encoder"))
    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            projection_dim=768, bos_token_id=tiny.bos_token_id, eos_token_id=tiny.eos_token_id,
                            pad_token_id=tiny.pad_token_id)
    CLIPTextModel(config).half().save_pretrained(os.path.join(out, "text_encoder"), **save)


if __name__ == "__main__":
    main(sys.argv[1])
