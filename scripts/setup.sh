#!/usr/bin/env bash
# One-command set-up on a fresh Debian 12 machine: install the system packages and Rust,
# fetch the preprocessor weights, build rotoscope (release), and run the main job on the
# bundled sample:
#     rotoscope render samples/astronaut.mp4 -p presets/anime.yaml -o out/astronaut-anime.mp4
# Re-runnable; every step is idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/fetch-models.sh

echo "[setup] building rotoscope (release)"
cargo build --release --locked

echo "[setup] rendering the bundled sample"
mkdir -p out
./target/release/rotoscope render samples/astronaut.mp4 -p presets/anime.yaml \
    -o out/astronaut-anime.mp4 --force
echo "[setup] done: out/astronaut-anime.mp4 (run the tests with: cargo test --locked)"
