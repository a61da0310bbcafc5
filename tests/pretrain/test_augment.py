"""The PIL path's blur: torchvision's GaussianBlur, computed separably (pretrain.augment)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from mocobench.pretrain import augment


def _image(h: int, w: int, mode: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return img.convert(mode)


@pytest.mark.parametrize("k,sigma", [(3, 0.1), (3, 2.0), (7, 1.1), (23, 0.5), (23, 2.0)])
@pytest.mark.parametrize("mode,size", [("RGB", (40, 57)), ("L", (31, 24)), ("RGB", (224, 224))])
def test_separable_blur_equals_torchvision_up_to_rounding(k, sigma, mode, size):
    img = _image(*size, mode)
    ours = np.asarray(augment.separable_blur(img, k, sigma)).astype(int)
    ref = np.asarray(TF.gaussian_blur(img, [k, k], [sigma, sigma])).astype(int)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    assert diff.max() <= 1  # float sums in another order: a .5 may round the other way
    assert (diff > 0).mean() < 1e-3


def test_blur_transform_draws_sigma_as_torchvision_and_blurs():
    img = _image(64, 48, "RGB", seed=3)
    ours, ref = augment.SeparableGaussianBlur(7, sigma=(0.1, 2.0)), T.GaussianBlur(7, sigma=(0.1, 2.0))
    changed = []
    for seed in range(5):
        torch.manual_seed(seed)
        a = np.asarray(ours(img)).astype(int)
        state_a = torch.get_rng_state()
        torch.manual_seed(seed)
        b = np.asarray(ref(img)).astype(int)
        assert torch.equal(state_a, torch.get_rng_state())  # one draw, as torchvision's
        assert np.abs(a - b).max() <= 1
        changed.append(np.abs(a - np.asarray(img).astype(int)).mean())
    assert max(changed) > 10 and min(changed) < max(changed) / 2  # it blurs, by a drawn σ
    x = torch.rand(3, 20, 20)  # tensors go to torchvision's own blur
    torch.manual_seed(0)
    a = ours(x)
    torch.manual_seed(0)
    torch.testing.assert_close(a, ref(x))


def test_moco_v2_views_use_the_separable_blur():
    blur = [t for t in augment.moco_v2(224).transforms if isinstance(t, T.RandomApply)][-1].transforms[0]
    assert isinstance(blur, augment.SeparableGaussianBlur) and blur.kernel_size == (23, 23)
