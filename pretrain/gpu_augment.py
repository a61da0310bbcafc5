"""The device input path: batched JPEG decoding and the papers' augmentations as tensor ops on the
training device (``input_pipeline=device``), instead of PIL in DataLoader workers (``pil``).

DataLoader workers only read file bytes (:class:`RawImages`); the training process decodes the
whole batch with ``torchvision.io.decode_jpeg(..., device=...)`` (nvJPEG on a GPU) and applies every
view's augmentation to the batch at once (:class:`DeviceViews`). The augmentations are those of
``mocobench.pretrain.augment`` with the same parameters and the same distributions (``tests/pretrain/
test_gpu_augment.py`` checks both against the PIL transforms):

    random resized crop (scale, ratio 3/4-4/3, torchvision's 10 tries then centre crop), colour
    jitter (factors and a random order per image, as ``ColorJitter``), grayscale, Gaussian blur
    (σ ~ U(0.1, 2), kernel ≈ 10 % of the crop, reflect padding), solarize, horizontal flip,
    ImageNet normalisation.

NOTE: the PIL path rounds to uint8 after every operation; here the image stays float in [0, 1]
after the crop's resize (antialiased bilinear, as PIL's), so pixel values differ by about one
grey level. The crop-and-resize of a whole view is batched (:func:`resized_crops`: two matrix
products with each crop's separable antialiasing weights over the padded batch), equal to a
``F.interpolate(antialias=True)`` per crop within 1e-4 grey levels. The flip is applied last: it commutes with every other (pointwise or symmetric) op.

Randomness: all parameters of a batch are drawn on the host (NumPy) from a generator seeded by
(seed, epoch, batch, rank) (:func:`batch_seed`), so a resumed run sees exactly the augmentations an
uninterrupted one saw, whatever the number of workers; they reach the device in one copy that does
not block the host (:func:`to_device`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data

from mocobench.checkpoints.backbones import IMAGENET_MEAN, IMAGENET_STD

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (PIL: 0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewSpec:
    """One view's augmentation; the PIL transform of ``mocobench.pretrain.augment`` with the same numbers."""

    size: int
    scale: tuple[float, float]
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation, hue
    jitter_p: float
    gray_p: float
    blur_p: float = 0.0
    solarize_p: float = 0.0
    flip_p: float = 0.5
    gray_first: bool = False  # MoCo v1 turns an image gray before the jitter
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @property
    def blur_kernel(self) -> int:
        return max(3, int(0.1 * self.size) // 2 * 2 + 1)  # as pretrain.augment._blur


def view_specs(cfg) -> list[ViewSpec]:
    """The views of the config's ``augmentation``, in the order of ``mocobench.pretrain.augment.build``."""
    s, lo = cfg.img_size, cfg.crop_min_scale
    if cfg.augmentation == "moco_v1":
        return [ViewSpec(s, (lo, 1.0), (0.4, 0.4, 0.4, 0.4), 1.0, 0.2, gray_first=True)] * 2
    if cfg.augmentation == "moco_v2":
        return [ViewSpec(s, (lo, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, blur_p=0.5)] * 2
    if cfg.augmentation == "smog":
        byol = dict(jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.2)
        return [ViewSpec(s, (lo, 1.0), blur_p=1.0, **byol), ViewSpec(s, (lo, 1.0), blur_p=0.1, solarize_p=0.2, **byol),
                *[ViewSpec(cfg.local_size, (0.05, lo), blur_p=0.5, **byol)] * cfg.local_crops]
    raise ValueError(f"unknown augmentation {cfg.augmentation!r}; use moco_v1, moco_v2 or smog")


# -- parameters: drawn on the host (NumPy), one row per image ----------------------------------
# NOTE: the draws are NumPy, not torch: a batch's parameters are a few hundred small array
# operations, each a microsecond in NumPy and several times that as a dispatched ATen call; the
# device path's host time per batch is what keeps a GPU waiting (issue 29).

def rng_of(g: int | np.random.Generator) -> np.random.Generator:
    """The generator of a batch's draws: a seed (:func:`batch_seed`) or a NumPy generator."""
    return g if isinstance(g, np.random.Generator) else np.random.default_rng(int(g))


def crop_params(heights, widths, scale, ratio, g: int | np.random.Generator, tries: int = 10) -> np.ndarray:
    """N x 4 (top, left, h, w) int64: ``RandomResizedCrop.get_params`` for N images at once.

    Per image: up to ``tries`` draws of area ~ U(scale)·H·W and log-aspect ~ U(log ratio), the first
    that fits is taken; if none fits, the largest centre crop with the aspect clamped to ``ratio``.
    """
    rng = rng_of(g)
    heights, widths = np.asarray(heights, dtype=np.float64), np.asarray(widths, dtype=np.float64)
    n = len(heights)
    H, W = heights[:, None], widths[:, None]  # N x 1
    area = H * W * rng.uniform(scale[0], scale[1], (n, tries))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, tries)))
    w = np.round(np.sqrt(area * aspect))  # N x tries
    h = np.round(np.sqrt(area / aspect))
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    first = fits.argmax(axis=1)[:, None]  # N x 1: first try that fits
    h, w = np.take_along_axis(h, first, 1)[:, 0], np.take_along_axis(w, first, 1)[:, 0]
    u = rng.random((n, 2))
    top = np.floor(u[:, 0] * (heights - h + 1))
    left = np.floor(u[:, 1] * (widths - w + 1))
    # fallback: centre crop
    in_ratio = widths / heights
    cw = np.where(in_ratio < ratio[0], widths, np.where(in_ratio > ratio[1], np.round(heights * ratio[1]), widths))
    ch = np.where(in_ratio < ratio[0], np.round(widths / ratio[0]), heights)
    ok = fits.any(axis=1)
    h, w = np.where(ok, h, ch), np.where(ok, w, cw)
    top = np.where(ok, top, np.floor((heights - ch) / 2))
    left = np.where(ok, left, np.floor((widths - cw) / 2))
    return np.stack([top, left, h, w], axis=1).astype(np.int64)


@dataclass
class ViewParams:
    """Everything random about one view of a batch of N images (NumPy arrays, on the host)."""

    crops: np.ndarray  # N x 4 int64: top, left, h, w
    jitter: np.ndarray  # N bool: colour jitter applied
    factors: np.ndarray  # N x 4 float32: brightness, contrast, saturation factors and hue shift
    order: np.ndarray  # N x 4: the order of the four jitter ops (a permutation per image)
    gray: np.ndarray  # N bool
    blur: np.ndarray  # N bool
    sigma: np.ndarray  # N float32
    solarize: np.ndarray  # N bool
    flip: np.ndarray  # N bool


def draw_params(spec: ViewSpec | list[ViewSpec], heights, widths, g: int | np.random.Generator) -> ViewParams:
    """The random choices of one view of N images; given k views that share their ranges (one
    group of :func:`view_groups`), of all k at once: k·N rows, view j's in rows j·N to (j+1)·N,
    each coin with its own view's probability."""
    rng = rng_of(g)
    specs = spec if isinstance(spec, list) else [spec]
    spec, k = specs[0], len(specs)
    heights, widths = np.tile(np.asarray(heights), k), np.tile(np.asarray(widths), k)
    n = len(heights)

    # the five coins of every row in one draw, each with its own view's probability
    coins = ("jitter_p", "gray_p", "blur_p", "solarize_p", "flip_p")
    p = np.repeat(np.array([[getattr(s, name) for name in coins] for s in specs]), n // k, axis=0)
    jitter, gray, blur, solarize, flip = (rng.random((n, len(coins))) < p).T.copy()
    b, c, s, hue = spec.jitter
    lo = np.array([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue], dtype=np.float32)
    hi = np.array([1 + b, 1 + c, 1 + s, hue], dtype=np.float32)
    factors = lo + (hi - lo) * rng.random((n, 4), dtype=np.float32)
    return ViewParams(crops=crop_params(heights, widths, spec.scale, spec.ratio, rng), jitter=jitter,
                      factors=factors, order=rng.random((n, 4)).argsort(axis=1), gray=gray, blur=blur,
                      sigma=0.1 + 1.9 * rng.random(n, dtype=np.float32), solarize=solarize, flip=flip)


def to_device(device: torch.device, **arrays) -> dict[str, torch.Tensor]:
    """Host arrays on ``device`` in one copy per dtype (float32, int64): packed into one buffer,
    pinned and copied without blocking on a GPU. A plain ``.to(cuda)`` of a pageable tensor waits for
    the stream's queued work before it returns; one per parameter would make the host wait on the
    GPU several times a batch."""
    out: dict[str, torch.Tensor] = {}
    for dtype in (np.float32, np.int64):
        mine = {k: np.asarray(a) for k, a in arrays.items() if (np.asarray(a).dtype.kind in "iub") == (dtype is np.int64)}
        if not mine:
            continue
        buf = torch.from_numpy(np.concatenate([a.astype(dtype, copy=False).ravel() for a in mine.values()]))
        if device.type == "cuda":
            buf = buf.pin_memory().to(device, non_blocking=True)
        elif buf.device != device:
            buf = buf.to(device)
        i = 0
        for k, a in mine.items():
            out[k] = buf[i:i + a.size].view(a.shape)
            i += a.size
    return out


def view_groups(specs: list[ViewSpec]) -> list[list[int]]:
    """The views made together (:func:`apply_views`): those of one size and drawing ranges (MoCo's
    two views; SMoG's two global ones, its local crops another group), in the order of ``specs``."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault((s.size, s.gray_first, s.scale, s.ratio, s.jitter), []).append(i)
    return sorted(groups.values())


# -- batched tensor ops: x is N x 3 x H x W float in [0, 1], f a per-image factor (N) ----------

def _per_image(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


_CONSTANTS: dict = {}


def _constant(name: str, values, shape, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A constant tensor made once per device and dtype (making it is a host call and a copy per use)."""
    key = (name, device, dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, device=device, dtype=dtype).view(shape)
    return _CONSTANTS[key]


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luma."""
    return (x * _constant("gray", GRAY_WEIGHTS, (1, 3, 1, 1), x.device, x.dtype)).sum(dim=1, keepdim=True)


def blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (_per_image(f) * x + (1 - _per_image(f)) * other).clamp_(0, 1)


def adjust_brightness(x, f):
    return blend(x, torch.zeros_like(x[:, :1]), f)


def adjust_contrast(x, f):
    return blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x, f):
    return blend(x, grayscale(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (in turns, per image) in HSV space.

    With v the largest channel (the first of equal ones, as torchvision's rgb_to_hsv), chroma its
    distance to the smallest: 6h = (next channel - the one after) / chroma + 2·argmax, i.e.
    (g - b)/c, 2 + (b - r)/c, 4 + (r - g)/c; a grey pixel (chroma 0) stays as it is."""
    return _rotate_hue(x, 6 * shift.view(-1, 1, 1, 1) + _constant("hue", (5.0, 3.0, 1.0), (1, 3, 1, 1), x.device, x.dtype))


def _rotate_hue(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """:func:`adjust_hue` given N x 3 x 1 x 1 ``offsets`` = 6·shift + (5, 3, 1), which the jitter's
    plan makes on the host. Back in RGB each channel k is v - chroma·clamp(min(m, 4 - m), 0, 1) with
    m = (6h + offsets_k) mod 6 (6·(h + shift mod 1) and 6h + 6·shift are equal mod 6)."""
    v, argmax = x.max(dim=1, keepdim=True)                                        # N x 1 x H x W
    chroma = v - x.amin(dim=1, keepdim=True)
    diff = x.roll(-1, dims=1) - x.roll(-2, dims=1)                                # g - b, b - r, r - g
    # 6h per channel as if it were the largest (2k + its difference / chroma), then the largest's
    h6 = torch.addcdiv(_constant("sector", (0.0, 2.0, 4.0), (1, 3, 1, 1), x.device, x.dtype), diff,
                       chroma.clamp(min=torch.finfo(x.dtype).tiny)).gather(1, argmax)
    m = torch.remainder(h6 + offsets, 6)
    return torch.addcmul(v, chroma, torch.minimum(m, 4 - m).clamp_(0, 1), value=-1)


def jitter_plan(factors, order, on=None) -> tuple[dict[str, np.ndarray], list[int]]:
    """The host's part of :func:`color_jitter` for N images: the arrays the device needs and the
    bounds of the slices whose hue turn is at each position (``bounds[k]:bounds[k + 1]``).

    The batch is sorted by the position of the hue (``perm``; ``inverse`` undoes it). Per position
    k and image: ``f`` the blend factor of its op (1 for the hue and for images without jitter, which
    leaves them exactly as they are), ``g`` the weight of the grey target (1 - f, 0 for
    brightness, whose target is black), ``contrast`` whether the target is the mean grey."""
    factors, order = np.asarray(factors, dtype=np.float32), np.asarray(order)
    n = len(order)
    on = np.ones(n, dtype=bool) if on is None else np.asarray(on, dtype=bool)
    hue_at = np.where(on, (order == 3).argmax(axis=1), 4)                              # 4: no jitter
    perm = np.argsort(hue_at, kind="stable")
    bounds = [0, *np.cumsum(np.bincount(hue_at, minlength=5)).tolist()]
    op = order[perm].T                                                                  # position x image
    f = np.where((op == 3) | ~on[perm][None], np.float32(1), np.take_along_axis(factors[perm].T, op, 0))
    return {"perm": perm, "inverse": np.argsort(perm), "f": f, "g": (1 - f) * (op != 0),
            "contrast": (op == 1).astype(np.float32),
            "hue_offsets": (6 * factors[perm, 3:4] + np.array([5, 3, 1], dtype=np.float32))[:, :, None, None]}, bounds


def apply_jitter(x: torch.Tensor, plan: dict[str, torch.Tensor], bounds: list[int]) -> torch.Tensor:
    """``ColorJitter`` per image from :func:`jitter_plan`'s arrays on x's device: a constant number of
    kernels per batch, whatever the orders. At each of the four positions every image takes the
    blend its op is (brightness, contrast and saturation blend with black, the mean grey and the
    grey image), and the images whose hue turn it is take the hue rotation, as one slice. The
    arithmetic per image is that of the single ops."""
    n = len(x)
    x = x[plan["perm"]]
    f, g, contrast = (plan[k].view(4, n, 1, 1, 1).unbind(0) for k in ("f", "g", "contrast"))
    weights = _constant("gray", GRAY_WEIGHTS, (1, 3, 1, 1), x.device, x.dtype)
    for k in range(4):
        gray = (x * weights).sum(dim=1, keepdim=True)
        other = torch.lerp(gray, gray.mean(dim=(1, 2, 3), keepdim=True), contrast[k])
        x = torch.addcmul(f[k] * x, g[k], other).clamp_(0, 1)
        a, b = bounds[k], bounds[k + 1]
        if b > a:
            x[a:b] = _rotate_hue(x[a:b], plan["hue_offsets"][a:b])
    return x[plan["inverse"]]


def color_jitter(x: torch.Tensor, factors, order, on=None) -> torch.Tensor:
    """``ColorJitter`` per image: op ``order[i, k]`` is the k-th applied to image i (factors N x 4:
    brightness, contrast, saturation factors and hue shift); images whose ``on`` is False pass
    unchanged. The plan is made on the host (:func:`jitter_plan`) and copied once."""
    as_np = lambda t: t.cpu().numpy() if isinstance(t, torch.Tensor) else t  # noqa: E731
    plan, bounds = jitter_plan(as_np(factors), as_np(order), None if on is None else as_np(on))
    return apply_jitter(x, to_device(x.device, **plan), bounds)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """Separable Gaussian blur with a k-tap kernel and σ per image, reflect padding."""
    n, c, H, W = x.shape
    t = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    kern = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)  # N x k
    kern = (kern / kern.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*3) x k
    y = F.pad(x.reshape(1, n * c, H, W), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(y, kern.view(n * c, 1, k, 1), groups=n * c)
    return y.view(n, c, H, W)


# Pixels of padding a crop group may hold (N x H x W of its padded batch, x 3 channels x 4 bytes):
# ImageNet's batches (images about 400 x 350) make one group; a rare huge image gets a group of its own
# instead of padding the whole batch to its size.
GROUP_PIXELS = 64 * 2 ** 20


def _aa_weights(start: torch.Tensor, length: torch.Tensor, out: int, full: int) -> torch.Tensor:
    """N x out x full: the weights of F.interpolate(mode="bilinear", antialias=True) resizing pixels
    [start, start + length) of an axis of ``full`` pixels to ``out``, zero outside them: a triangle
    filter of half-width max(scale, 1) input pixels around each output pixel's centre, normalised
    over the pixels inside the crop (which is also how an upscale clamps at the border)."""
    dev = start.device
    scale = (length.to(torch.float32) / out).view(-1, 1, 1)                         # N x 1 x 1
    support = scale.clamp(min=1.0)
    center = scale * (torch.arange(out, device=dev, dtype=torch.float32) + 0.5).view(1, -1, 1)  # N x out x 1
    j = torch.arange(full, device=dev).view(1, 1, -1) - start.view(-1, 1, 1)       # N x 1 x full, crop coords
    w = (1 - ((j + 0.5 - center) / support).abs()).clamp_(min=0)
    w = w * ((j >= 0) & (j < length.view(-1, 1, 1)))
    return w / w.sum(dim=2, keepdim=True)


def _size_groups(heights, widths, budget: int = GROUP_PIXELS) -> list[list[int]]:
    """Indices of the images in groups whose padded batch (count x max H x max W) stays within
    ``budget`` pixels, the largest images first; one group for a batch of similar sizes."""
    h, w = [int(v) for v in heights], [int(v) for v in widths]
    order = sorted(range(len(h)), key=lambda i: -h[i] * w[i])
    groups, cur, hmax, wmax = [], [], 0, 0
    for i in order:
        nh, nw = max(hmax, h[i]), max(wmax, w[i])
        if cur and (len(cur) + 1) * nh * nw > budget:
            groups.append(cur)
            cur, nh, nw = [], h[i], w[i]
        cur.append(i)
        hmax, wmax = nh, nw
    groups.append(cur)
    return groups


def _padded(members: list[torch.Tensor]) -> torch.Tensor:
    """G x 3 x Hp x Wp float32: the images zero-padded to the largest height and width."""
    if len(members) == 1:
        return members[0][None].to(torch.float32)
    with warnings.catch_warnings():   # "nested tensors are in prototype stage": used for padding only
        warnings.filterwarnings("ignore", "The PyTorch API of nested tensors", UserWarning)
        return torch.nested.as_nested_tensor(members).to_padded_tensor(0).to(torch.float32)


def resized_crops(images: list[torch.Tensor], crops: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each uint8 3 x H_i x W_i image at its (top, left, h, w) and resize it to size x size
    (bilinear, antialiased as PIL); N x 3 x size x size float in [0, 1]. ``crops`` (on the host or
    on the images' device) may hold k rows per image (k views: row j·N + i crops image i), giving
    k·N crops.

    Batched: the images are padded into one tensor once (per size group), whatever k, and the
    antialiased resize of every crop is two batched matrix products with its separable weights
    (:func:`_aa_weights`), equal to ``F.interpolate(..., antialias=True)`` of each crop up to
    float rounding. A constant number of kernels per batch, where a resize per image cost about
    40 host calls each."""
    dev, n = images[0].device, len(images)
    k = len(crops) // n
    crops = (torch.from_numpy(crops) if isinstance(crops, np.ndarray) else crops).to(dev)
    heights = [img.shape[-2] for img in images]
    widths = [img.shape[-1] for img in images]
    groups = _size_groups(heights, widths, GROUP_PIXELS)
    # the weights of every crop at once, rows and columns, over the largest image side; a group
    # takes its images' rows and the columns of its padded size (a crop's weights are zero outside
    # it, so nothing is cut)
    both = _aa_weights(crops[:, :2].t().reshape(-1), crops[:, 2:].t().reshape(-1), size,
                       max(max(heights), max(widths)))                              # 2kN x size x max
    wy_all, wx_all = both.view(2, k, n, size, -1).unbind(0)                         # k x N x size x max
    if len(groups) == 1:   # the usual batch: no indexing, the images in their own order
        padded = _padded(images)                                                    # N x 3 x Hp x Wp
        wy, wx = wy_all[..., :padded.shape[-2]], wx_all[..., :padded.shape[-1]]
        out = wy.unsqueeze(2) @ padded @ wx.unsqueeze(2).transpose(-1, -2)          # k x N x 3 x size x size
    else:
        out = torch.empty(k, n, 3, size, size, device=dev)
        for idx in groups:
            padded = _padded([images[i] for i in idx])                              # G x 3 x Hp x Wp
            rows = torch.tensor(idx, device=dev)
            wy = wy_all[:, rows, :, :padded.shape[-2]]                              # k x G x size x Hp
            wx = wx_all[:, rows, :, :padded.shape[-1]]                              # k x G x size x Wp
            out[:, rows] = wy.unsqueeze(2) @ padded @ wx.unsqueeze(2).transpose(-1, -2)
    return out.reshape(k * n, 3, size, size).div_(255).clamp_(0, 1)


def apply_view(images: list[torch.Tensor], spec: ViewSpec, p: ViewParams) -> torch.Tensor:
    """One view of the batch: N x 3 x size x size, normalised, on the images' device; k views of
    one group (``p`` of k·N rows, :func:`draw_params` of the group): k·N x 3 x size x size.

    Every parameter the device needs goes over in one copy (:func:`to_device`)."""
    dev = images[0].device
    plan, bounds = jitter_plan(p.factors, p.order, p.jitter)
    blur_rows = p.blur.nonzero()[0]
    on = to_device(dev, crops=p.crops.astype(np.float32), gray=p.gray, solarize=p.solarize, flip=p.flip,
                   blur_rows=blur_rows, sigma=p.sigma[blur_rows], **plan)
    x = resized_crops(images, on["crops"], spec.size)
    masks = {k: on[k].bool().view(-1, 1, 1, 1) for k in ("gray", "solarize", "flip")}

    def gray(x):
        return torch.where(masks["gray"], grayscale(x).expand_as(x), x)

    if spec.gray_first:
        x = gray(x)
    if p.jitter.any():
        x = apply_jitter(x, on, bounds)
    if not spec.gray_first:
        x = gray(x)
    if len(blur_rows):
        x[on["blur_rows"]] = gaussian_blur(x[on["blur_rows"]], on["sigma"], spec.blur_kernel)
    x = torch.where(masks["solarize"], torch.where(x >= 128 / 255, 1 - x, x), x)
    x = torch.where(masks["flip"], x.flip(-1), x)
    mean = _constant("mean", IMAGENET_MEAN, (1, 3, 1, 1), dev, x.dtype)
    std = _constant("std", IMAGENET_STD, (1, 3, 1, 1), dev, x.dtype)
    return (x - mean) / std


def apply_views(images: list[torch.Tensor], specs: list[ViewSpec], g: int | np.random.Generator) -> list[torch.Tensor]:
    """Every view of the batch, drawn from ``g`` (a seed or a NumPy generator) and made a group at a
    time (:func:`view_groups`): a group's k views are one batch of k copies of the images, each row
    with its own parameters (:func:`draw_params` of the group), so k views cost the host calls of one."""
    rng = rng_of(g)
    heights = [img.shape[-2] for img in images]
    widths = [img.shape[-1] for img in images]
    out: list[torch.Tensor] = [None] * len(specs)   # type: ignore[list-item]
    for members in view_groups(specs):
        group = [specs[i] for i in members]
        x = apply_view(images, group[0], draw_params(group, heights, widths, rng))
        for j, view in zip(members, x.chunk(len(members))):
            out[j] = view
    return out


# -- the data path: bytes in workers, decode + views on the device ----------------------------

def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return ((seed * 1_000_003 + epoch) * 100_000_007 + batch) * 4099 + rank


class RawImages(torch.utils.data.Dataset):
    """Item i: ``(file bytes as a uint8 tensor, label, path)`` of image i; no decoding here."""

    def __init__(self, folder, labels: list[int]):
        self.folder, self.labels = folder, labels

    def __len__(self) -> int:
        return len(self.folder.samples)

    def set_epoch(self, epoch: int) -> None:  # the augmentation is drawn per batch, not per item
        pass

    def __getitem__(self, i: int):
        path, _ = self.folder.samples[i]
        with open(path, "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        return data, self.labels[i], path


def collate_raw(batch: list):
    data, labels, paths = zip(*batch)
    return list(data), torch.tensor(labels), list(paths)


ORDERINGS = ("side_stream", "barrier", "none")


def decode(data: list[torch.Tensor], paths: list[str], device,
           ordering: str = "side_stream") -> tuple[list[torch.Tensor], list[int]]:
    """Decode a batch on ``device``: ``(RGB uint8 images, indices of the unreadable ones)``.

    One batched ``decode_jpeg`` call; if it fails (a PNG, a corrupt file), image by image, with
    ``decode_image`` on the CPU as the fallback for formats other than JPEG.

    NOTE: nvJPEG's hardware decoder (A100, H100, H200) writes its output buffers without waiting for
    the work queued on the stream it is given, and those buffers come from PyTorch's caching
    allocator, which hands a block freed on a stream to that stream's next allocation while queued
    kernels may still read it. The decode then overwrites live tensors: on an H200, MoCo v2 and
    UniMoCo from the JPEG folder hit a non-finite loss within 7 steps (``benchmarks/device_check.py``)
    while their views were finite on the CPU. Reported upstream (pytorch/vision#9606,
    meta-pytorch/torchcodec#1634); ``benchmarks/nvjpeg_race.py`` measures it. ``ordering``:

    - ``side_stream`` (default): decode on a stream of its own, idle at each call (the decode ends
      with a host sync of it), whose pool never holds blocks of the training stream; the images
      are then recorded on the training stream, so the allocator reuses none before the training
      stream is done with it. The host need not wait for the queued training step.
    - ``barrier``: wait on the host for the current stream's queued work first (simple, but the
      host can no longer run ahead of the GPU).
    - ``none``: as torchvision does it; only for ``benchmarks/nvjpeg_race.py``.
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"decode ordering {ordering!r}: use one of {', '.join(ORDERINGS)}")
    device = torch.device(device)
    if device.type != "cuda" or ordering == "none":
        return _decode(data, paths, device)
    main = torch.cuda.current_stream(device)
    if ordering == "barrier":
        main.synchronize()
        return _decode(data, paths, device)
    side = _decode_stream(device)
    side.synchronize()  # idle already (the last decode synced it); nothing of the training stream's
    with torch.cuda.stream(side):
        images, bad = _decode(data, paths, device)
    main.wait_stream(side)
    for img in images:
        img.record_stream(main)
    return images, bad


_DECODE_STREAMS: dict = {}


def _decode_stream(device: torch.device):
    if device not in _DECODE_STREAMS:
        _DECODE_STREAMS[device] = torch.cuda.Stream(device)
    return _DECODE_STREAMS[device]


def _decode(data, paths, device):
    from torchvision.io import ImageReadMode, decode_jpeg

    # NOTE: torchvision 0.29 deprecates its decoders in favour of TorchCodec, which this suite does
    # not depend on; they are still the ones with a batched nvJPEG path.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device)), []
        except RuntimeError:
            return _decode_one_by_one(data, paths, device)


def _decode_one_by_one(data, paths, device):
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    images, bad = [], []
    for i, (d, path) in enumerate(zip(data, paths)):
        try:
            images.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            try:
                images.append(decode_image(d, mode=ImageReadMode.RGB).to(device))
            except RuntimeError as e:
                warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
                bad.append(i)
    return images, bad


class DeviceViews:
    """``(raw batch, seed) -> (views, labels, n_skipped)`` on ``device``: the device counterpart of
    ``SeededViews`` + ``collate_fill``; unreadable images are replaced by repeating readable ones."""

    def __init__(self, cfg, device):
        self.specs, self.device = view_specs(cfg), torch.device(device)

    def __call__(self, raw, seed: int):
        data, labels, paths = raw
        images, bad = decode(data, paths, self.device)
        if not images:
            raise RuntimeError(f"all {len(data)} images of a batch are unreadable; see the warnings above")
        keep = [i for i in range(len(data)) if i not in set(bad)]
        fill = [i % len(images) for i in range(len(bad))]
        images, labels = images + [images[i] for i in fill], labels[keep + [keep[i] for i in fill]]
        return apply_views(images, self.specs, seed), labels, len(bad)


PIPELINES = ("pil", "device")


def device_views(cfg, device) -> DeviceViews | None:
    """The device path for ``input_pipeline=device``; ``None`` for the PIL path."""
    if cfg.input_pipeline not in PIPELINES:
        raise ValueError(f"input_pipeline={cfg.input_pipeline!r}: use pil (decode and augment in DataLoader "
                         f"workers) or device (decode_jpeg and tensor-op augmentations on the training device)")
    return DeviceViews(cfg, device) if cfg.input_pipeline == "device" else None
