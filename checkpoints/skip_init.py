"""Building a model whose weights are about to be replaced, without random initialisation.

Random initialisation is wasted work there: timm's ``trunc_normal_`` alone takes seconds for a
ViT-B, and on the meta device it runs through slow Python reference kernels.
"""

from __future__ import annotations

import torch

from mocobench.checkpoints.backbones import Backbone, BackboneSpec, build_backbone

# Shape-preserving in-place ops that weight initialisers use.
INIT_OPS = frozenset({"uniform_", "normal_", "fill_", "zero_", "copy_", "clamp_", "clamp_min_",
                      "clamp_max_", "erfinv_", "mul_", "add_", "sub_", "div_", "exp_", "sqrt_",
                      "abs_", "neg_", "random_", "bernoulli_", "exponential_", "log_normal_",
                      "masked_fill_",
                      # torch.nn.init functions (they take the tensor as ``tensor=``)
                      "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
                      "trunc_normal_", "constant_", "zeros_", "ones_", "orthogonal_", "eye_", "dirac_"})


class SkipInit(torch.overrides.TorchFunctionMode):
    """Replaces weight initialisation by zero-filling (on meta tensors only, or on all tensors)."""

    def __init__(self, meta_only: bool):
        super().__init__()
        self.meta_only = meta_only
        self.zeroed: set[int] = set()  # data pointers already zero-filled (initialisers chain ops)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in INIT_OPS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and (tensor.is_meta or not self.meta_only):
                # zeros, once, not the uninitialised memory: denormals in it make the shape
                # probe (a forward pass in Backbone.__init__) many times slower
                if not tensor.is_meta and tensor.data_ptr() not in self.zeroed:
                    self.zeroed.add(tensor.data_ptr())
                    tensor.detach().zero_()
                return tensor
        return func(*args, **kwargs)


def build_uninitialised(spec: BackboneSpec) -> Backbone | None:
    """The backbone of ``spec`` with zero weights (the stage-probe forward in ``Backbone.__init__``
    only needs shapes), or ``None`` if it has non-persistent buffers, which a state dict does not
    cover and which must therefore be built normally."""
    with SkipInit(meta_only=False):
        backbone = build_backbone(spec)
    if set(dict(backbone.net.named_buffers())) - set(backbone.net.state_dict()):
        return None
    return backbone
