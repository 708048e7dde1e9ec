#!/usr/bin/env bash
# Real photographs for the preprocessor tests, taken from scikit-image's wheel (pinned):
#   astronaut.png  Eileen Collins, NASA portrait (public domain): face, upper body, one gloved hand
#   camera.png     "cameraman" (grayscale): body in profile, face, both gloved hands on a camera
# Installs into $MODELS_DIR/photos/. Idempotent. Needs: python3 with pip, sha256sum.
#
# No bare, clearly visible hand: scikit-image's other photos have no people (lfw_subset.npy
# is faces only), and the photo data shipped by matplotlib (grace_hopper.jpg: portrait),
# mediapipe's wheel and the @mediapipe/* / @tensorflow-models hand npm packages (none) do not
# help. MediaPipe's hand landmark model gives the cameraman's gloved hands a presence score
# near 0, so hand tests on these photos check parity, not detection.
set -euo pipefail
: "${MODELS_DIR:?MODELS_DIR must be set (run scripts/fetch-models.sh)}"

VERSION="0.26.0"
DEST="$MODELS_DIR/photos"
declare -A SHA256=(
    [astronaut.png]=88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5
    [camera.png]=b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a
)

hash_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

mkdir -p "$DEST"
missing=()
for name in "${!SHA256[@]}"; do
    hash_ok "$DEST/$name" "${SHA256[$name]}" || missing+=("$name")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "[photos] all ${#SHA256[@]} photos present in $DEST"
    exit 0
fi
echo "[photos] fetching scikit-image==$VERSION for: ${missing[*]}"

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "[photos] error: '$PYTHON -m pip' not available (apt-get install python3-pip)" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The data files are identical in every wheel; pin one wheel so the download does not depend
# on the local interpreter (and never builds anything).
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
    -d "$WORK" "scikit-image==$VERSION"
WHEEL="$(ls "$WORK"/scikit_image-"$VERSION"-*.whl)"

for name in "${missing[@]}"; do
    "$PYTHON" - "$WHEEL" "skimage/data/$name" "$DEST/$name.part" <<'PY'
import sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
    if ! hash_ok "$DEST/$name.part" "${SHA256[$name]}"; then
        echo "[photos] error: $name sha256 $(sha256sum "$DEST/$name.part" | cut -d' ' -f1), expected ${SHA256[$name]}" >&2
        rm -f "$DEST/$name.part"
        exit 1
    fi
    mv "$DEST/$name.part" "$DEST/$name"
    echo "[photos] $DEST/$name"
done
