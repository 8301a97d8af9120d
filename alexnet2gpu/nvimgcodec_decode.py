"""Batches of JPEGs decoded with NVIDIA's nvImageCodec: `--gpu-decoder nvimgcodec` (the `nvimgcodec` extra).

Why a second decoder. torchvision's batched `decode_jpeg` serves one call at a time per process, holding its
thread until the batch is decoded (baseline JPEGs by the hardware decoder on A100/H100/H200, others with
nvJPEG's Huffman stage on that thread); on 16-core H100 boxes that capped the GPU data path at 17 to 29 k
images/s (docs/BENCHMARKS.md). nvImageCodec spreads the Huffman stage over host threads of its own
(`host_threads`), and on cards with a hardware JPEG decoder (A100, H100) it sends the JPEGs that decoder
takes to it. It also returns None for an image it cannot decode rather than failing the whole call, so a batch
with an odd file needs no halving (gpu_decode.decode_files).

Measured on an H200 with prepared 256x256 JPEGs it was slower than torchvision's call in every setup, and
more threads did not help (docs/gpu-decode.md): it is an opt-in, not the default.

Pixels. On a CUDA device the images come from nvJPEG or the hardware decoder. On the CPU (how the tests run
it) nvImageCodec decodes with libjpeg-turbo and gives PIL's pixels. EXIF orientation is ignored, as PIL's
`Image.open` and torchvision's decoders ignore it, so every path sees the same pixel grid.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
import torch

from .data import default_workers
from .optional import require

# nvImageCodec's own log lines (a file it cannot parse, a codec library it cannot find) would interleave
# with the progress display; the training loop names unreadable files itself. Set before its first import.
os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")

# The run's decoder: every backend nvImageCodec has, at full load, with its default options, the fastest of the
# setups tools/nvimgcodec_check.py times (an H200: make_decoder says what these mean).
BACKENDS: dict[str, float] | None = None
OPTIONS = ""

_decoders: dict[torch.device, tuple[object, threading.Lock]] = {}
_lock = threading.Lock()


def host_threads() -> int:
    """Host threads for nvImageCodec's Huffman stage: this rank's share of the cores (data.default_workers
    plus the one it leaves to the training process). The loader workers share them: they read files, and
    decode only their --cpu-decode-share of the images; tools/nvimgcodec_check.py measures fewer threads."""
    return default_workers() + 1


def module():
    """nvidia.nvimgcodec, or one sentence naming the extra that installs it."""
    return require("nvidia.nvimgcodec", "--gpu-decoder nvimgcodec")


def make_decoder(device: torch.device, threads: int, backends: dict[str, float] | None = None, options: str = ""):
    """An nvImageCodec decoder for `device` with `threads` host threads.

    On a CUDA device `backends` maps names of nvimgcodec.BackendKind (HW_GPU_ONLY, GPU_ONLY, HYBRID_CPU_GPU,
    CPU_ONLY) to the share of a batch each should take (nvImageCodec's load hint; the hardware decoder may be
    given part of a batch and nvJPEG the rest). None is every backend it has at full load: the hardware
    decoder first, then nvJPEG's CUDA decoder (HYBRID_CPU_GPU: Huffman on the host threads), then
    libjpeg-turbo for what neither takes. GPU_ONLY could not be made for JPEG (0.9, on an H200).
    `options` are nvImageCodec's decoder options, e.g. "nvjpeg_cuda_decoder:hybrid_huffman_threshold=0" (Huffman
    decoding on the GPU for every image, not only large ones). On the CPU it is libjpeg-turbo alone."""
    nvimgcodec = module()
    if device.type != "cuda":
        return nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=threads,
                                  backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)], options=options)
    index = device.index if device.index is not None else torch.cuda.current_device()
    kinds = None if backends is None else [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, name), load)
                                           for name, load in backends.items()]
    return nvimgcodec.Decoder(device_id=index, max_num_cpu_threads=threads, backends=kinds, options=options)


def decoder(device: torch.device) -> tuple[object, threading.Lock]:
    """The run's decoder for `device`, made on first use (it loads its codec libraries then) and kept, with the
    lock its calls take: the training and validation loaders each decode in a thread of their own, and a pass's
    thread may still be decoding ahead when the next pass's starts."""
    with _lock:
        if device not in _decoders:
            _decoders[device] = make_decoder(device, host_threads(), BACKENDS, OPTIONS), threading.Lock()
        return _decoders[device]


def decode(files: list[torch.Tensor], device: torch.device, in_channels: int, using=None) -> list[torch.Tensor | None]:
    """Each file (uint8 bytes) decoded to C x H x W uint8 on `device`, None where nvImageCodec cannot read it;
    by the run's decoder, or by `using` (one of make_decoder's).

    The tensors are views of H x W x C memory (the decoders' interleaved output), which gpu_decode's
    stacking and cropping read as they are. On CUDA the decoding is queued on the current stream, and the
    tensors come through DLPack on that stream, so later work on it sees the finished pixels."""
    nvimgcodec = module()
    device = torch.device(device)
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False,
                                     color_spec=nvimgcodec.ColorSpec.GRAY if in_channels == 1 else
                                     nvimgcodec.ColorSpec.SRGB)
    sources = [f.numpy() if f.is_contiguous() else np.ascontiguousarray(f.numpy()) for f in files]
    using, lock = (using, contextlib.nullcontext()) if using is not None else decoder(device)
    if device.type == "cuda":
        stream = torch.cuda.current_stream(device).cuda_stream
        with lock:
            images = using.decode(sources, params=params, cuda_stream=stream)
        # The capsule is asked for here, with the stream: torch versions differ in the arguments they would pass
        # to __dlpack__. DLPack's number for the legacy default stream is 1.
        as_tensor = lambda image: torch.from_dlpack(image.__dlpack__(stream=stream or 1))
    else:
        with lock:
            images = using.decode(sources, params=params)
        as_tensor = lambda image: torch.from_numpy(np.asarray(image))  # its DLPack export needs CUDA
    return [None if image is None else as_tensor(image).permute(2, 0, 1) for image in images]
