"""Check nvImageCodec as the GPU data path's decoder (`--gpu-decoder nvimgcodec`) on a CUDA machine: its batch
decode rate by host threads and by backend (the hardware JPEG decoder, nvJPEG with its Huffman stage on the
host or on the GPU, the two together), beside torchvision's nvJPEG on the same files in the same run;
decode_images with it; the input pipeline with each decoder; and its pixels and fallbacks against the CPU
path. Its fastest setup is what nvimgcodec_decode.BACKENDS and OPTIONS should then say.

    PYTHONPATH=. python3 tools/nvimgcodec_check.py --out DIR
    PYTHONPATH=. python3 tools/nvimgcodec_check.py --device cpu --images 64 --out DIR   # the CPU-safe parts

It needs the nvimgcodec extra (pip install 'alexnet2gpu[nvimgcodec]'; on a machine without pip access,
tools/stage_gpu_extras.sh unpacks it into .gpu_extras, which gpu_check.sh puts on the path). It prints one
table on stdout (also DIR/nvimgcodec_check.txt and .json), progress on stderr, and exits with status 1 and
one line on stderr when a check fails. About 40 s on a 16-core GPU machine.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from check_common import (CheckFailed, check_options, copies_for_pipeline, run_check, save, say,  # tools/ siblings
                          write_test_files)
from gpu_decode_check import DECODER_LIMIT, batches_of, odd_files_report, path_differences, pipeline_rate, rate

THREADS = (1, 4, 8)  # host threads besides nvimgcodec_decode.host_threads()
GPU_HUFFMAN = "nvjpeg_cuda_decoder:hybrid_huffman_threshold=0"  # Huffman decoding on the GPU for small images too
# (label, backends with their load hints, options) measured at the rank's host threads on CUDA: each backend
# alone, nvJPEG with its Huffman stage on the GPU, and the hardware decoder taking part of each batch. nvJPEG's
# CUDA decoder is the HYBRID_CPU_GPU backend; GPU_ONLY could not be created for JPEG on an H200 (0.9, code 7),
# so a setup that cannot be created is a row that says so, not the end of the check.
SETUPS = (("HW_GPU_ONLY only", {"HW_GPU_ONLY": 1.0}, ""),
          ("HYBRID_CPU_GPU only", {"HYBRID_CPU_GPU": 1.0}, ""),
          ("HYBRID_CPU_GPU, Huffman on the GPU", {"HYBRID_CPU_GPU": 1.0}, GPU_HUFFMAN),
          ("HW_GPU_ONLY 0.75 + HYBRID_CPU_GPU", {"HW_GPU_ONLY": 0.75, "HYBRID_CPU_GPU": 1.0}, ""),
          ("HW_GPU_ONLY 0.5 + HYBRID_CPU_GPU", {"HW_GPU_ONLY": 0.5, "HYBRID_CPU_GPU": 1.0}, ""),
          ("GPU_ONLY only", {"GPU_ONLY": 1.0}, ""))


def decoded_share(decode, files) -> float:
    """The fraction of `files` a decoder limited to some backends decodes (the hardware one takes only some
    JPEGs; the rest come back as None, and a run would decode them on the CPU)."""
    return sum(image is not None for image in decode(files)) / len(files)


def check(args, _started: float) -> str:  # (the start time: the torchvision check budgets by it)
    import torch
    from alexnet2gpu import nvimgcodec_decode
    from alexnet2gpu.data import default_workers
    from alexnet2gpu.gpu_decode import decode_images, decode_on_device

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckFailed("no CUDA device here: run it on a GPU machine, or pass --device cpu for the CPU-safe parts.")
    nvimgcodec = nvimgcodec_decode.module()
    workers = default_workers() if args.workers is None else args.workers
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "the CPU"
    with tempfile.TemporaryDirectory(prefix="nvimgcodec-check-") as tmp:
        root, samples, files = write_test_files(Path(tmp), args.images)
        chunks = [files[s:s + args.batch] for s in range(0, len(files), args.batch)]
        every = lambda decode: lambda: [decode(c) for c in chunks]

        say("(a) torchvision's batch decode alone, the same run's baseline")
        rows = [("(a) torchvision batch decode alone", rate(every(lambda c: decode_on_device(c, device, 3)),
                                                             len(files), device, args.repeats))]
        say(f"    {rows[-1][1]:,.0f} images/s")
        threads = sorted({*THREADS, nvimgcodec_decode.host_threads()})
        for t in threads:
            say(f"(e) nvimgcodec batch decode alone, every backend, {t} host threads")
            using = nvimgcodec_decode.make_decoder(device, t)
            rows.append((f"(e) nvimgcodec batch decode alone, {t} host threads",
                         rate(every(lambda c: nvimgcodec_decode.decode(c, device, 3, using)), len(files), device,
                              args.repeats)))
            say(f"    {rows[-1][1]:,.0f} images/s")
        shares = {}
        for label, backends, options in SETUPS if cuda else ():
            say(f"(e) nvimgcodec batch decode alone, {label}, {threads[-1]} host threads")
            try:
                using = nvimgcodec_decode.make_decoder(device, threads[-1], backends, options)
            except RuntimeError as e:  # a backend this build or card lacks
                rows.append((f"(e) nvimgcodec, {label}: cannot be created", float("nan")))
                say(f"    cannot be created: {e}")
                continue
            decode = lambda c: nvimgcodec_decode.decode(c, device, 3, using)
            shares[label] = decoded_share(decode, chunks[0])
            rows.append((f"(e) nvimgcodec, {label} ({shares[label]:.0%} decoded)",
                         rate(every(decode), len(files), device, args.repeats)))
            say(f"    {rows[-1][1]:,.0f} images/s")
        say("(f) decode_images with nvimgcodec: decode, crop, flip")
        batches = batches_of(samples, args.batch)
        rows.append(("(f) decode_images with nvimgcodec: decode + crop + flip",
                     rate(lambda: [decode_images(b, device, 3, "train", 224, "nvimgcodec") for b in batches],
                          len(files), device, args.repeats)))
        say(f"    {rows[-1][1]:,.0f} images/s")

        say("checking nvimgcodec's pixels and fallbacks against the CPU path")
        (worst, mean), = path_differences(samples[:4 * args.batch], args.batch, device, (0.0,), "nvimgcodec")
        if mean > DECODER_LIMIT:
            raise CheckFailed(f"decode=gpu with nvimgcodec and decode=cpu crops differ by {mean:.2f} grey levels on "
                              "average: nvimgcodec's images do not reach the CPU path's crops.")
        odd = odd_files_report(Path(tmp) / "odd", device, "nvimgcodec")

        batches_total = copies_for_pipeline(root, samples, workers, args.batch)[2]
        for decoder, share in (("torchvision", "auto"), ("nvimgcodec", 0.0), ("nvimgcodec", "auto")):
            say(f"(g) input pipeline, decode=gpu with {decoder}, share {share}, {workers} workers")
            value, used, _ = pipeline_rate(root, args.batch, device, "gpu", workers, batches_total, share, decoder)
            rows.append((f"(g) input pipeline, {decoder}, share {used:.2f}{' (auto)' if share == 'auto' else ''}",
                         value))
            say(f"    {value:,.0f} images/s")

    import torchvision
    lines = [f"nvImageCodec {nvimgcodec.__version__} on {name} (torch {torch.__version__}, torchvision "
             f"{torchvision.__version__}): {len(samples)} JPEGs 256x256 q90, batch {args.batch}, 224 crops, "
             f"{workers} loader workers",
             f"  {'measurement':64s} {'images/s':>10s}"]
    lines += [f"  {label:64s} {value:10,.0f}" for label, value in rows]
    lines += [f"  nvimgcodec vs PIL crops: max abs pixel difference {worst}, mean {mean:.3f}",
              f"  fallbacks (mean abs difference to the CPU path): {odd}"]
    return save(args.out, "nvimgcodec_check", "\n".join(lines), dict(
        device=name, torch=torch.__version__, nvimgcodec=nvimgcodec.__version__, images=len(samples),
        batch=args.batch, workers=workers, rates=dict(rows), backend_shares=shares, path_max_difference=worst,
        path_mean_difference=mean, fallbacks=odd))


def main(argv=None) -> int:
    p = check_options(__doc__, "nvimgcodec-check", "(a), (e) and (f)")
    return run_check("nvimgcodec_check", check, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
