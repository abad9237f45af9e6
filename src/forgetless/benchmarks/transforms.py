"""Batch-wise input transforms on tensors: uint8 images in, model-ready float tensors out.

Everything here acts on a whole batch at once (no per-sample Python), so the same code runs on the
CPU and the GPU. A task's pipeline is a :class:`Compose`; the random parts take an explicit
``torch.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import torch


class Transform:
    """``transform(x, train, generator) -> x'``; ``train`` switches augmentation on."""

    def __call__(self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None):
        raise NotImplementedError  # abstract base

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


class Compose(Transform):
    def __init__(self, *steps: Transform) -> None:
        self.steps = [s for s in steps if s is not None]

    def __call__(self, x, train=False, generator=None):
        for step in self.steps:
            x = step(x, train, generator)
        return x

    def output_shape(self, shape):
        for step in self.steps:
            shape = step.output_shape(shape)
        return shape

    def then(self, *steps: Transform) -> Compose:
        return Compose(*self.steps, *steps)


class ToFloat(Transform):
    """uint8 [0, 255] -> float [0, 1]; optionally standardised with per-channel mean/std."""

    def __init__(self, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        self.mean = None if mean is None else torch.tensor(mean).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, x, train=False, generator=None):
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.mean is not None and x.dim() == 4:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x


class Pad(Transform):
    """Zero padding on every side (e.g. MNIST 28x28 -> 32x32 with ``pad=2``)."""

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def __call__(self, x, train=False, generator=None):
        return torch.nn.functional.pad(x, (self.pad,) * 4)

    def output_shape(self, shape):
        c, h, w = shape
        return (c, h + 2 * self.pad, w + 2 * self.pad)


class PermutePixels(Transform):
    """A fixed permutation of the pixel positions (same for every channel), as in permuted MNIST."""

    def __init__(self, permutation: torch.Tensor) -> None:
        self.permutation = permutation

    def __call__(self, x, train=False, generator=None):
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        return flat[:, :, self.permutation.to(x.device)].reshape(n, c, h, w)


class RandomCropFlip(Transform):
    """Random crop after zero padding (``pad`` pixels) and, if ``flip``, a random horizontal flip.

    Offsets are drawn per sample and applied with one gather, so a batch costs a few tensor ops.
    """

    def __init__(self, pad: int = 4, flip: bool = True) -> None:
        self.pad = pad
        self.flip = flip

    def __call__(self, x, train=False, generator=None):
        if not train:
            return x
        n, c, h, w = x.shape
        dev = x.device
        if self.pad:
            padded = torch.nn.functional.pad(x, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n, 1), generator=generator).to(dev)
            dx = torch.randint(0, 2 * self.pad + 1, (n, 1), generator=generator).to(dev)
            rows = (dy + torch.arange(h, device=dev)).view(n, 1, h, 1)
            cols = (dx + torch.arange(w, device=dev)).view(n, 1, 1, w)
            batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
            chans = torch.arange(c, device=dev).view(1, c, 1, 1)
            x = padded[batch, chans, rows, cols]
        if self.flip:
            mask = (torch.rand(n, generator=generator) < 0.5).to(dev).view(n, 1, 1, 1)
            x = torch.where(mask, x.flip(3), x)
        return x


class Rotate90(Transform):
    """Rotate every image by ``k`` x 90 degrees (counter-clockwise), e.g. the rotated-MNIST domain."""

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def __call__(self, x, train=False, generator=None):
        return torch.rot90(x, self.k, dims=(2, 3))

    def output_shape(self, shape):
        c, h, w = shape
        return (c, w, h) if self.k % 2 else shape


class Invert(Transform):
    """``1 - x`` on [0, 1] inputs (apply after ToFloat without standardisation): the inverted-MNIST domain."""

    def __call__(self, x, train=False, generator=None):
        return 1.0 - x


class RandomAffine(Transform):
    """Random translation (up to ``shift`` pixels per axis) and rotation (up to ``degrees``) of every image,
    drawn per sample and applied with one bilinear resampling; the uncovered border takes ``fill`` (the
    images' background, e.g. -1 for tanh-range digits)."""

    def __init__(self, shift: float = 2.0, degrees: float = 10.0, fill: float = 0.0) -> None:
        self.shift, self.degrees, self.fill = shift, degrees, fill

    def __call__(self, x, train=False, generator=None):
        if not train or not (self.shift or self.degrees):
            return x
        n, _, h, w = x.shape
        angle = (torch.rand(n, generator=generator) * 2 - 1) * (self.degrees * torch.pi / 180)
        # affine_grid works in [-1, 1] coordinates: a pixel is 2 / size of them
        move = (torch.rand(n, 2, generator=generator) * 2 - 1) * self.shift * torch.tensor([2 / w, 2 / h])
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1)
        grid = torch.nn.functional.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        moved = torch.nn.functional.grid_sample(x - self.fill, grid, align_corners=False, padding_mode="zeros")
        return moved + self.fill
