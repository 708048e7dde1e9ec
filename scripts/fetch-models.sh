#!/usr/bin/env bash
# Install the real preprocessor weights (and the real test photographs) into the models
# directory: $ROTOSCOPE_MODELS, default ./models. Idempotent; pinned versions.
# Each part lives in scripts/fetch/*.sh and is run with MODELS_DIR set.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export MODELS_DIR="${ROTOSCOPE_MODELS:-$ROOT/models}"
mkdir -p "$MODELS_DIR"
for part in "$ROOT"/scripts/fetch/*.sh; do
    [ -e "$part" ] || continue
    echo "[fetch-models] $(basename "$part")"
    bash "$part"
done
echo "[fetch-models] done: $MODELS_DIR"
