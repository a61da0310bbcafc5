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

Randomness: all parameters of a batch are drawn on the CPU from a generator seeded by
(seed, epoch, batch, rank) (:func:`batch_seed`), so a resumed run sees exactly the augmentations an
uninterrupted one saw, whatever the number of workers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

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


# -- parameters: drawn on the CPU, one row per image ------------------------------------------

def crop_params(heights: torch.Tensor, widths: torch.Tensor, scale, ratio, g: torch.Generator,
                tries: int = 10) -> torch.Tensor:
    """N x 4 (top, left, h, w): ``RandomResizedCrop.get_params`` for N images at once.

    Per image: up to ``tries`` draws of area ~ U(scale)·H·W and log-aspect ~ U(log ratio), the first
    that fits is taken; if none fits, the largest centre crop with the aspect clamped to ``ratio``.
    """
    n = len(heights)
    H, W = heights[:, None].double(), widths[:, None].double()  # N x 1
    area = H * W * torch.empty(n, tries, dtype=torch.float64).uniform_(scale[0], scale[1], generator=g)
    log_r = torch.empty(n, tries, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * aspect))  # N x tries
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    first = fits.double().argmax(dim=1, keepdim=True)  # N x 1: first try that fits
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    u = torch.rand(n, 2, dtype=torch.float64, generator=g)
    top = torch.floor(u[:, 0] * (heights - h + 1))
    left = torch.floor(u[:, 1] * (widths - w + 1))
    # fallback: centre crop
    in_ratio = widths.double() / heights.double()
    cw = torch.where(in_ratio < ratio[0], widths.double(), torch.where(in_ratio > ratio[1], torch.round(heights * ratio[1]), widths.double()))
    ch = torch.where(in_ratio < ratio[0], torch.round(widths / ratio[0]), heights.double())
    ok = fits.any(dim=1)
    h, w = torch.where(ok, h, ch), torch.where(ok, w, cw)
    top = torch.where(ok, top, torch.div(heights - ch, 2, rounding_mode="floor"))
    left = torch.where(ok, left, torch.div(widths - cw, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], dim=1).long()


@dataclass
class ViewParams:
    """Everything random about one view of a batch of N images (CPU tensors)."""

    crops: torch.Tensor  # N x 4 long: top, left, h, w
    jitter: torch.Tensor  # N bool: colour jitter applied
    factors: torch.Tensor  # N x 4: brightness, contrast, saturation factors and hue shift
    order: torch.Tensor  # N x 4: the order of the four jitter ops (a permutation per image)
    gray: torch.Tensor  # N bool
    blur: torch.Tensor  # N bool
    sigma: torch.Tensor  # N
    solarize: torch.Tensor  # N bool
    flip: torch.Tensor  # N bool


def draw_params(spec: ViewSpec | list[ViewSpec], heights: torch.Tensor, widths: torch.Tensor,
                g: torch.Generator) -> ViewParams:
    """The random choices of one view of N images; given k views that share their ranges (one
    group of :func:`view_groups`), of all k at once: k·N rows, view j's in rows j·N to (j+1)·N,
    each coin with its own view's probability."""
    specs = spec if isinstance(spec, list) else [spec]
    spec, k = specs[0], len(specs)
    heights, widths = (heights.repeat(k), widths.repeat(k)) if k > 1 else (heights, widths)
    n = len(heights)

    # the five coins of every row in one draw, each with its own view's probability
    coins = ("jitter_p", "gray_p", "blur_p", "solarize_p", "flip_p")
    p = torch.tensor([[getattr(s, name) for name in coins] for s in specs]).repeat_interleave(n // k, dim=0)
    jitter, gray, blur, solarize, flip = (torch.rand(n, len(coins), generator=g) < p).unbind(1)
    b, c, s, hue = spec.jitter
    lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue])
    hi = torch.tensor([1 + b, 1 + c, 1 + s, hue])
    return ViewParams(crops=crop_params(heights, widths, spec.scale, spec.ratio, g), jitter=jitter,
                      factors=lo + (hi - lo) * torch.rand(n, 4, generator=g),
                      order=torch.rand(n, 4, generator=g).argsort(dim=1), gray=gray, blur=blur,
                      sigma=0.1 + 1.9 * torch.rand(n, generator=g), solarize=solarize, flip=flip)


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


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luma."""
    w = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (_per_image(f) * x + (1 - _per_image(f)) * other).clamp_(0, 1)


def adjust_brightness(x, f):
    return blend(x, torch.zeros_like(x[:, :1]), f)


def adjust_contrast(x, f):
    return blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x, f):
    return blend(x, grayscale(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (in turns, per image) in HSV space, in about 20 kernels.

    With v the largest channel (the first of equal ones, as torchvision's rgb_to_hsv), chroma its
    distance to the smallest: 6h = (next channel - the one after) / chroma + 2·argmax, i.e.
    (g - b)/c, 2 + (b - r)/c, 4 + (r - g)/c; a grey pixel (chroma 0) stays as it is."""
    v, argmax = x.max(dim=1, keepdim=True)                                        # N x 1 x H x W
    chroma = v - x.amin(dim=1, keepdim=True)
    diff = x.roll(-1, dims=1) - x.roll(-2, dims=1)                                # g - b, b - r, r - g
    h = diff.gather(1, argmax) / chroma.clamp(min=torch.finfo(x.dtype).tiny) + 2 * argmax
    h = torch.remainder(h / 6 + shift.view(-1, 1, 1, 1), 1.0)
    # back to RGB: each channel k is v - chroma·clamp(min(m, 4 - m), 0, 1) with m = (n_k + 6h) mod 6
    m = torch.remainder(_hue_offsets(x.device, x.dtype) + 6 * h, 6)
    return v - chroma * torch.minimum(m, 4 - m).clamp(0, 1)


_HUE_OFFSETS: dict = {}


def _hue_offsets(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(5, 3, 1) as 1 x 3 x 1 x 1, made once per device (a constant is a host call per use)."""
    key = (device, dtype)
    if key not in _HUE_OFFSETS:
        _HUE_OFFSETS[key] = torch.tensor([5.0, 3.0, 1.0], device=device, dtype=dtype).view(1, 3, 1, 1)
    return _HUE_OFFSETS[key]


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                 on: torch.Tensor | None = None) -> torch.Tensor:
    """``ColorJitter`` per image: op ``order[i, k]`` is the k-th applied to image i; images whose
    ``on`` is False pass unchanged. factors: N x 4 (on x's device); order and on: N x 4 and N on the
    CPU, so that choosing the images does not wait for the GPU.

    A constant number of kernels per batch, whatever the orders: at each of the four positions every
    image takes the blend its op is (brightness, contrast and saturation blend with black, the mean
    grey and the grey image; the other images with factor 1, which leaves them exactly as they
    are), and the images whose hue turn it is take the hue rotation, as one slice: the batch is
    sorted by the position of the hue first. The arithmetic per image is that of the single ops."""
    dev, n = x.device, len(x)
    on = torch.ones(n, dtype=torch.bool) if on is None else on
    hue_at = torch.where(on, (order == 3).int().argmax(dim=1), 4)                     # 4: no jitter
    perm = hue_at.argsort(stable=True)
    bounds = [0, *torch.bincount(hue_at, minlength=5).cumsum(0).tolist()]
    perm_dev = perm.to(dev)
    x, factors = x[perm_dev], factors[perm_dev]
    op = order[perm].to(dev).t().reshape(4, n, 1, 1, 1)                                # position, image
    f = torch.where((op == 3) | ~on[perm].to(dev).view(1, n, 1, 1, 1), 1.0,
                    factors.t().reshape(4, n, 1, 1, 1).gather(0, op))
    # per position: the blend factor, 1 - it where the target is grey (0 for black), contrast or not
    fs, gs, contrast = f.unbind(0), ((1 - f) * (op != 0)).unbind(0), (op == 1).unbind(0)
    weights = torch.tensor(GRAY_WEIGHTS, device=dev, dtype=x.dtype).view(1, 3, 1, 1)
    shift = factors[:, 3]
    for k in range(4):
        gray = (x * weights).sum(dim=1, keepdim=True)
        other = torch.where(contrast[k], gray.mean(dim=(1, 2, 3), keepdim=True), gray)
        x = torch.addcmul(fs[k] * x, gs[k], other).clamp_(0, 1)
        a, b = bounds[k], bounds[k + 1]
        if b > a:
            x[a:b] = adjust_hue(x[a:b], shift[a:b])
    return x[perm.argsort().to(dev)]


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


def _size_groups(heights: torch.Tensor, widths: torch.Tensor, budget: int = GROUP_PIXELS) -> list[torch.Tensor]:
    """Indices of the images in groups whose padded batch (count x max H x max W) stays within
    ``budget`` pixels, the largest images first; one group for a batch of similar sizes."""
    order = (heights * widths).argsort(descending=True).tolist()
    groups, cur, hmax, wmax = [], [], 0, 0
    h, w = heights.tolist(), widths.tolist()
    for i in order:
        nh, nw = max(hmax, h[i]), max(wmax, w[i])
        if cur and (len(cur) + 1) * nh * nw > budget:
            groups.append(cur)
            cur, nh, nw = [], h[i], w[i]
        cur.append(i)
        hmax, wmax = nh, nw
    groups.append(cur)
    return [torch.tensor(g) for g in groups]


def resized_crops(images: list[torch.Tensor], crops: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each uint8 3 x H_i x W_i image at its (top, left, h, w) and resize it to size x size
    (bilinear, antialiased as PIL); N x 3 x size x size float in [0, 1]. ``crops`` may hold k rows
    per image (k views: row j·N + i crops image i), giving k·N crops.

    Batched: the images are padded into one tensor once (per size group), whatever k, and the
    antialiased resize of every crop is two batched matrix products with its separable weights
    (:func:`_aa_weights`), equal to ``F.interpolate(..., antialias=True)`` of each crop up to
    float rounding. A constant number of kernels per batch, where a resize per image cost about
    40 host calls each."""
    dev, n = images[0].device, len(images)
    k = len(crops) // n
    crops = crops.to(dev)
    heights = torch.tensor([img.shape[-2] for img in images])
    widths = torch.tensor([img.shape[-1] for img in images])
    groups = _size_groups(heights, widths, GROUP_PIXELS)
    out = torch.empty(k, n, 3, size, size, device=dev)
    # the weights of every crop at once, rows and columns, over the largest image side; a group
    # takes its images' rows and the columns of its padded size (a crop's weights are zero outside
    # it, so nothing is cut)
    both = _aa_weights(crops[:, :2].t().reshape(-1), crops[:, 2:].t().reshape(-1), size,
                       int(max(heights.max(), widths.max())))                       # 2kN x size x max
    wy_all, wx_all = both.view(2, k, n, size, -1).unbind(0)                         # k x N x size x max
    for idx in groups:
        members = [images[i] for i in idx.tolist()]
        with warnings.catch_warnings():   # "nested tensors are in prototype stage": used for padding only
            warnings.filterwarnings("ignore", "The PyTorch API of nested tensors", UserWarning)
            padded = (torch.nested.as_nested_tensor(members).to_padded_tensor(0) if len(members) > 1
                      else members[0][None]).to(torch.float32)                      # G x 3 x Hp x Wp
        rows = idx.to(dev)
        wy = wy_all[:, rows, :, :padded.shape[-2]]                                    # k x G x size x Hp
        wx = wx_all[:, rows, :, :padded.shape[-1]]                                    # k x G x size x Wp
        out[:, rows] = wy.unsqueeze(2) @ padded @ wx.unsqueeze(2).transpose(-1, -2)  # k x G x 3 x size x size
    return out.view(k * n, 3, size, size).div_(255).clamp_(0, 1)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(_per_image(mask.to(a.device)), a, b)


def apply_view(images: list[torch.Tensor], spec: ViewSpec, p: ViewParams) -> torch.Tensor:
    """One view of the batch: N x 3 x size x size, normalised, on the images' device; k views of
    one group (``p`` of k·N rows, :func:`draw_params` of the group): k·N x 3 x size x size."""
    dev = images[0].device
    x = resized_crops(images, p.crops, spec.size)

    def gray(x):
        return _where(p.gray, grayscale(x).expand_as(x), x)

    if spec.gray_first:
        x = gray(x)
    if p.jitter.any():
        x = color_jitter(x, p.factors.to(dev), p.order, on=p.jitter)
    if not spec.gray_first:
        x = gray(x)
    on = p.blur.nonzero().squeeze(1)
    if len(on):
        x[on.to(dev)] = gaussian_blur(x[on.to(dev)], p.sigma[on].to(dev), spec.blur_kernel)
    x = _where(p.solarize, torch.where(x >= 128 / 255, 1 - x, x), x)
    x = _where(p.flip, x.flip(-1), x)
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    return (x - mean) / std


def apply_views(images: list[torch.Tensor], specs: list[ViewSpec], g: torch.Generator) -> list[torch.Tensor]:
    """Every view of the batch, drawn from ``g`` and made a group at a time (:func:`view_groups`):
    a group's k views are one batch of k copies of the images, each row with its own parameters
    (:func:`draw_params` of the group), so k views cost the host calls of one."""
    heights = torch.tensor([img.shape[-2] for img in images])
    widths = torch.tensor([img.shape[-1] for img in images])
    out: list[torch.Tensor] = [None] * len(specs)   # type: ignore[list-item]
    for members in view_groups(specs):
        group = [specs[i] for i in members]
        x = apply_view(images, group[0], draw_params(group, heights, widths, g))
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
        return apply_views(images, self.specs, torch.Generator().manual_seed(seed)), labels, len(bad)


PIPELINES = ("pil", "device")


def device_views(cfg, device) -> DeviceViews | None:
    """The device path for ``input_pipeline=device``; ``None`` for the PIL path."""
    if cfg.input_pipeline not in PIPELINES:
        raise ValueError(f"input_pipeline={cfg.input_pipeline!r}: use pil (decode and augment in DataLoader "
                         f"workers) or device (decode_jpeg and tensor-op augmentations on the training device)")
    return DeviceViews(cfg, device) if cfg.input_pipeline == "device" else None
