"""ms per view of the PIL augmentations in one worker: ours (``mocobench.pretrain.augment``) against the
official MoCo v2 recipe's (``official_recipe.py``: PIL's blur), and the blur alone three ways.

    python -m benchmarks.augment_views [--size 224] [--images 20] [--repeats 3]

One thread, as in a DataLoader worker. Images are random, 224-400 px a side (the device check's).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def per_call_ms(fn, items, repeats: int) -> float:
    fn(items[0])
    t = time.perf_counter()
    for _ in range(repeats):
        for x in items:
            fn(x)
    return (time.perf_counter() - t) / (repeats * len(items)) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.transforms import functional as TF

    from benchmarks.official_recipe import PILBlur
    from mocobench.pretrain import augment

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(224, 401)), int(rng.integers(224, 401)), 3),
                                           dtype=np.uint8)) for _ in range(args.images)]
    s = args.size
    official = T.Compose([T.RandomResizedCrop(s, scale=(0.2, 1.0)), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                          T.RandomGrayscale(p=0.2), T.RandomApply([PILBlur()], p=0.5), T.RandomHorizontalFlip(),
                          T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    crops = [T.RandomResizedCrop(s, scale=(0.2, 1.0))(im) for im in images]
    k = max(3, int(0.1 * s) // 2 * 2 + 1)
    rows = [("MoCo v2 view, ours (pretrain.augment.moco_v2)", per_call_ms(augment.moco_v2(s), images, args.repeats)),
            ("MoCo v2 view, official recipe (PIL's blur)", per_call_ms(official, images, args.repeats)),
            (f"blur alone: torchvision GaussianBlur({k}) on PIL", per_call_ms(lambda im: TF.gaussian_blur(im, [k, k], [1.0, 1.0]), crops, args.repeats)),
            (f"blur alone: SeparableGaussianBlur({k})", per_call_ms(lambda im: augment.separable_blur(im, k, 1.0), crops, args.repeats)),
            ("blur alone: PIL GaussianBlur(radius)", per_call_ms(PILBlur(), crops, args.repeats))]
    for name, ms in rows:
        print(f"{ms:8.2f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
