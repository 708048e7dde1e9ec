#!/usr/bin/env bash
# MediaPipe pose / hand / face .tflite models from the npm package @mediapipe/holistic
# (Apache-2.0), pinned. Installs into $MODELS_DIR/mediapipe/. Idempotent: a model already
# present with the pinned sha256 is left alone; the package is only downloaded when
# something is missing. Needs: npm, node, tar, sha256sum.
#
# Where each model comes from inside the package:
#   pose_landmark_full.tflite   plain file in the tarball
#   the five others             byte ranges of holistic_solution_packed_assets.data, listed as
#                               {"filename", "start", "end"} in holistic_solution_packed_assets_loader.js
set -euo pipefail
: "${MODELS_DIR:?MODELS_DIR must be set (run scripts/fetch-models.sh)}"

PACKAGE="@mediapipe/holistic"
VERSION="0.5.1675471629"
# npm's "shasum" (sha1) of the registry tarball, checked in addition to npm's own integrity check.
TARBALL_SHA1="f1127d43161ff27e8889d5d39aaea164f9730980"

DEST="$MODELS_DIR/mediapipe"
declare -A SHA256=(
    [pose_detection.tflite]=a63c614bef30d35947f13be361820b1e4e3bec9cfeebf4d11216a18373108e85
    [pose_landmark_full.tflite]=e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f
    [palm_detection_full.tflite]=2f25e740121983f68ffc05f99991d524dc0ea812134f6316a26125816941ee85
    [hand_landmark_full.tflite]=8c026882c9ec059ce0f8e75266bee5a9a23c341a40e0000df755374d3d1b9b68
    [face_detection_short_range.tflite]=3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633
    [face_landmark.tflite]=c603fa6149219a3e9487dc9abd7a0c24474c77263273d24868378cdf40aa26d1
)

hash_ok() { # file expected-sha256
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

mkdir -p "$DEST"
missing=()
for name in "${!SHA256[@]}"; do
    hash_ok "$DEST/$name" "${SHA256[$name]}" || missing+=("$name")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "[mediapipe] all ${#SHA256[@]} models present in $DEST"
    exit 0
fi
echo "[mediapipe] fetching $PACKAGE@$VERSION for: ${missing[*]}"

for tool in npm node tar sha256sum sha1sum; do
    command -v "$tool" >/dev/null || { echo "[mediapipe] error: '$tool' not found (apt-get install nodejs npm)" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
TARBALL="$WORK/mediapipe-holistic-$VERSION.tgz"
[ -f "$TARBALL" ] || { echo "[mediapipe] error: npm pack did not produce $TARBALL" >&2; exit 1; }
got_sha1="$(sha1sum "$TARBALL" | cut -d' ' -f1)"
[ "$got_sha1" = "$TARBALL_SHA1" ] || { echo "[mediapipe] error: $TARBALL sha1 $got_sha1, expected $TARBALL_SHA1" >&2; exit 1; }
tar xzf "$TARBALL" -C "$WORK"
PKG="$WORK/package"

for name in "${missing[@]}"; do
    if [ -f "$PKG/$name" ]; then
        cat "$PKG/$name" >"$DEST/$name.part"
    else
        # Cut the byte range [start, end) named in the packed-assets loader's file list.
        node - "$PKG/holistic_solution_packed_assets_loader.js" "$PKG/holistic_solution_packed_assets.data" \
            "$name" "$DEST/$name.part" <<'JS'
const fs = require("fs");
const [loader, data, name, out] = process.argv.slice(2);
const m = fs.readFileSync(loader, "utf8").match(/loadPackage\((\{"files".*?\})\);/);
if (!m) { console.error(`no loadPackage({"files": ...}) list in ${loader}`); process.exit(1); }
const entry = JSON.parse(m[1]).files.find(f => f.filename.split("/").pop() === name);
if (!entry) { console.error(`${name} is not listed in ${loader}`); process.exit(1); }
const bytes = fs.readFileSync(data);
if (entry.end > bytes.length) { console.error(`${name}: range ends at ${entry.end}, ${data} has ${bytes.length} bytes`); process.exit(1); }
fs.writeFileSync(out, bytes.subarray(entry.start, entry.end));
JS
    fi
    if ! hash_ok "$DEST/$name.part" "${SHA256[$name]}"; then
        echo "[mediapipe] error: $name sha256 $(sha256sum "$DEST/$name.part" | cut -d' ' -f1), expected ${SHA256[$name]}" >&2
        rm -f "$DEST/$name.part"
        exit 1
    fi
    mv "$DEST/$name.part" "$DEST/$name"
    echo "[mediapipe] $DEST/$name"
done
