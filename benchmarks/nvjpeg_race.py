"""Does a CUDA ``decode_jpeg`` overwrite memory that queued kernels still read? With each of
``mocobench.pretrain.gpu_augment.decode``'s orderings: ``none`` (as torchvision), ``barrier``, ``side_stream``.

    python -m benchmarks.nvjpeg_race                     # on a GPU: ~10 s
    python -m benchmarks.nvjpeg_race --device cpu --trials 3   # the code path only (a test runs it)

Each trial fills "victim" tensors with known values (one per image, the size of its decoded
output), queues a long matrix computation and then one sum per victim on the current stream, frees
the victims while those sums are still queued, and decodes a batch of JPEGs. PyTorch's caching
allocator may hand the freed blocks to the decoder at once (same stream); if the decoder writes
them before the queued sums have run, a sum comes out wrong: the trial counts as corrupted.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import torch


def jpeg_batch(n: int, h: int, w: int) -> list[torch.Tensor]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


def trial(jpegs: list[torch.Tensor], h: int, w: int, device: torch.device, ordering: str, busy: torch.Tensor,
          busy_iters: int) -> bool:
    """True when a queued sum read memory the decoder had written (the trial is corrupted)."""
    from mocobench.pretrain.gpu_augment import decode

    numel = 3 * h * w // 4  # float32 victims of the decoded images' byte size
    victims = [torch.full((numel,), float(i + 1), device=device) for i in range(len(jpegs))]
    x = busy
    for _ in range(busy_iters):  # keeps the stream busy, so the sums below are still queued
        x = torch.tanh(x @ x)
    sums = torch.stack([v.sum() for v in victims]) + 0 * x[0, 0]
    del victims
    images, bad = decode(jpegs, [f"<jpeg {i}>" for i in range(len(jpegs))], device, ordering)
    expected = torch.arange(1, len(jpegs) + 1, dtype=torch.float64) * numel
    got = sums.double().cpu()
    assert not bad and all(tuple(im.shape) == (3, h, w) for im in images)
    return not torch.equal(got, expected)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    ap.add_argument("--out", default=None, help="write the counts as JSON here")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
    from mocobench.core.dist import pick_device
    from mocobench.pretrain.gpu_augment import ORDERINGS

    device = pick_device(args.device)
    h, w = args.size
    jpegs = jpeg_batch(args.images, h, w)
    n = 4096 if device.type == "cuda" else 64
    busy = torch.randn(n, n, device=device) / n ** 0.5
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "trials": args.trials, "images": args.images, "size": [h, w]}
    print(f"{'ordering':<12} {'corrupted':>10} {'trials':>7} {'s':>6}")
    for ordering in ORDERINGS[::-1]:  # none first: the hazard, then the two remedies
        t = time.perf_counter()
        bad = sum(trial(jpegs, h, w, device, ordering, busy, 40 if device.type == "cuda" else 1) for _ in range(args.trials))
        result[ordering] = {"corrupted": bad, "seconds": round(time.perf_counter() - t, 1)}
        print(f"{ordering:<12} {bad:>10} {args.trials:>7} {result[ordering]['seconds']:>6}", flush=True)
    if args.out:
        from mocobench.core.io import atomic_write_json

        atomic_write_json(args.out, result)
    return 1 if result["barrier"]["corrupted"] or result["side_stream"]["corrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
