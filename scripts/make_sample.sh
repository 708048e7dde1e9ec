#!/usr/bin/env bash
# Build samples/astronaut.mp4: the project's bundled test clip.
#
# A real photograph of a person (NASA portrait of astronaut Eileen Collins, public domain,
# shipped as skimage/data/astronaut.png inside the scikit-image wheel) is animated with a
# slow pan, zoom and sway so pose estimation has a moving body to track, and a rising
# tone is added so round trips can check that audio survives.
#
# Needs only: python3 -m pip (download only, nothing is installed), unzip, ffmpeg, sha256sum.
# Re-runnable: every run rebuilds the clip from scratch in a temporary directory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/samples/astronaut.mp4}"

SKIMAGE_VERSION=0.26.0
# Pin one wheel so the picture is byte-identical wherever the script runs.
WHEEL_PLATFORM=manylinux_2_28_x86_64
WHEEL_PYTHON=3.11
PHOTO_SHA256=88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5

FPS=24
SECONDS_LONG=3
SIZE=512

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "[make_sample] downloading scikit-image $SKIMAGE_VERSION wheel (for skimage/data/astronaut.png)"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform "$WHEEL_PLATFORM" --python-version "$WHEEL_PYTHON" \
    "scikit-image==$SKIMAGE_VERSION" -d "$tmp/wheel"
unzip -q -j -o "$tmp"/wheel/scikit_image-*.whl skimage/data/astronaut.png -d "$tmp"
echo "$PHOTO_SHA256  $tmp/astronaut.png" | sha256sum --check --quiet

# Motion, all periodic over the clip length T so the clip loops:
# - scale oscillates 600..680 px (zoom in/out),
# - rotate sways +-3.4 degrees,
# - the 512x512 crop window pans left/right and bobs up/down.
T="$SECONDS_LONG"
VF="scale=w='trunc((640+40*sin(2*PI*t/$T))/2)*2':h='trunc((640+40*sin(2*PI*t/$T))/2)*2':eval=frame"
VF="$VF,rotate=a='0.06*sin(2*PI*t/$T)':fillcolor=0x303030"
VF="$VF,crop=$SIZE:$SIZE:x='(iw-$SIZE)/2+40*sin(2*PI*t/$T)':y='(ih-$SIZE)/2-20*sin(4*PI*t/$T)'"
VF="$VF,format=yuv420p"

# A tone gliding 220 -> 440 Hz with a soft fade at both ends.
AF="aevalsrc='0.25*sin(2*PI*(220*t+220*t*t/(2*$T)))*min(1,min(t,$T-t)*8)':s=48000:c=mono:d=$T"

mkdir -p "$(dirname "$OUT")"
echo "[make_sample] encoding $OUT"
ffmpeg -hide_banner -loglevel error -y \
    -loop 1 -framerate "$FPS" -t "$T" -i "$tmp/astronaut.png" \
    -f lavfi -i "$AF" \
    -filter:v "$VF" \
    -c:v libx264 -preset medium -crf 20 -pix_fmt yuv420p \
    -color_primaries bt709 -color_trc bt709 -colorspace bt709 \
    -c:a aac -b:a 64k -t "$T" \
    -map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
    -movflags +faststart \
    "$tmp/sample.mp4"
mv -f "$tmp/sample.mp4" "$OUT"
echo "[make_sample] wrote $OUT ($(stat -c %s "$OUT") bytes)"
