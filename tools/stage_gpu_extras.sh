#!/bin/bash
# Unpack into .gpu_extras/ what a GPU machine that cannot pip install needs beside torch: the nvimgcodec extra
# (nvImageCodec and nvJPEG for CUDA 13) and pytest-xdist, so gpu_check.sh runs the tests 8 files at a
# time. Copy or carry the folder along and put it on PYTHONPATH (gpu_check.sh does when it is there). Of
# nvimgcodec only what JPEG decoding needs is kept (about 20 MB of the wheels' 30): the Python module for one
# Python version, the library, its nvJPEG and libjpeg-turbo extensions and libnvjpeg.
#   bash tools/stage_gpu_extras.sh              # for Python 3.12 (the GPU machines'); PYTAG=cp311 for 3.11
# Needs pip with access to the package index, run from anywhere; replaces .gpu_extras/ whole.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTAG=${PYTAG:-cp312}
NVIMGCODEC=${NVIMGCODEC:-$(grep -o '^nvidia-nvimgcodec-cu13==[0-9.]*' requirements.txt || echo nvidia-nvimgcodec-cu13)}
WHEELS=$(mktemp -d); trap 'rm -rf "$WHEELS"' EXIT
NVJPEG=${NVJPEG:-nvidia-nvjpeg==13.0.*}  # CUDA 13.0's, as torch 2.11's CUDA 13.0 builds: any 13.x driver runs it
for spec in "$NVIMGCODEC" "$NVJPEG"; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "${PYTAG#cp}" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --dest "$WHEELS" "$spec"
done
rm -rf .gpu_extras; mkdir -p .gpu_extras
for wheel in "$WHEELS"/*.whl; do
  python3 -m zipfile -e "$wheel" "$WHEELS/unpacked"
done
U=$WHEELS/unpacked/nvidia
mkdir -p .gpu_extras/nvidia/nvimgcodec/extensions .gpu_extras/nvidia/cu13/lib
cp "$U"/nvimgcodec/__init__.py "$U"/nvimgcodec/libnvimgcodec.so.0 "$U"/nvimgcodec/nvimgcodec_impl.cpython-"${PYTAG#cp}"-*.so \
  .gpu_extras/nvidia/nvimgcodec/
cp "$U"/nvimgcodec/extensions/libnvjpeg_ext.so.* "$U"/nvimgcodec/extensions/libjpeg_turbo_ext.so.* \
  .gpu_extras/nvidia/nvimgcodec/extensions/
cp "$U"/cu13/lib/libnvjpeg.so.13 .gpu_extras/nvidia/cu13/lib/
# A regular package that still finds the other nvidia.* folders on the path (torch's CUDA libraries).
echo 'from pkgutil import extend_path; __path__ = extend_path(__path__, __name__)' > .gpu_extras/nvidia/__init__.py
# pytest-xdist and execnet are pure Python: unpacked whole, dist-info included (pytest finds the plugin by it).
XDIST=${XDIST:-$(grep -o '^pytest-xdist==[0-9.]*' requirements.txt || echo pytest-xdist)}
python3 -m pip download --quiet --only-binary=:all: --dest "$WHEELS/xdist" "$XDIST"
for wheel in "$WHEELS"/xdist/pytest_xdist-*.whl "$WHEELS"/xdist/execnet-*.whl; do
  python3 -m zipfile -e "$wheel" .gpu_extras
done
du -sh .gpu_extras
