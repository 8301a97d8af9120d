#!/bin/bash
# Unpack into .gpu_extras/ what a GPU machine that cannot pip install needs beside torch: pytest-xdist and
# execnet (pure Python), so gpu_check.sh runs the tests 8 files at a time. Copy the folder along; gpu_check.sh
# puts it on PYTHONPATH when it is there.
#   bash tools/stage_gpu_extras.sh
# Needs pip with access to the package index, run from anywhere; replaces .gpu_extras/ whole.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=$(mktemp -d); trap 'rm -rf "$WHEELS"' EXIT
rm -rf .gpu_extras; mkdir -p .gpu_extras
# Unpacked whole, dist-info included (pytest finds the plugin by it).
XDIST=${XDIST:-$(grep -o '^pytest-xdist==[0-9.]*' requirements.txt || echo pytest-xdist)}
python3 -m pip download --quiet --only-binary=:all: --dest "$WHEELS" "$XDIST"
for wheel in "$WHEELS"/pytest_xdist-*.whl "$WHEELS"/execnet-*.whl; do
  python3 -m zipfile -e "$wheel" .gpu_extras
done
du -sh .gpu_extras
