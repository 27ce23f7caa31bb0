"""FastGAN's networks, DiffAugment and losses (Liu et al., "Towards Faster and Stabilized GAN Training for
High-fidelity Few-shot Image Synthesis", ICLR 2021), written for phenosynth from the paper's description.

Shapes: images are ``(B, 3, R, R)`` float in [-1, 1]; ``R`` (``resolution``) is 64, 128, 256 or 512; the auxiliary
("small") output and every reconstruction are ``(B, 3, S, S)`` with ``S = min(R, 128)``.

- :class:`FastGANGenerator`: ``z (B, nz)`` -> a 4 x 4 seed (transposed conv + GLU), up-sampling blocks to ``R``
  (every other one with noise injection and a second conv, the paper's "UpBlockComp"), and **skip-layer excitation**
  (SLE): the 4/8/16/32 px features gate, channel-wise, the 64/128/256/512 px ones (pool to 4 x 4, 4 x 4 conv, Swish,
  1 x 1 conv, sigmoid). Returns the image at ``R`` and at ``S``. Conditional mode: a class embedding is added to
  every SLE gate's pre-activation (the gates decide which channels, i.e. which parts, a condition uses).
- :class:`FastGANDiscriminator`: a ``R`` -> 8 px path of residual down blocks with SLE from 8x larger features, and a
  ``S`` -> 8 px path on the small image; logits from both (5 x 5 maps). On real images it also returns the
  self-supervised reconstructions: small decoders (pool to 8 x 8, up blocks to ``S``) rebuild the whole image from
  the last 8 x 8 feature, the small image from the small path, and one random quarter of the image from the
  matching quarter of the 16 x 16 feature. Conditional mode: an auxiliary classifier head on the last feature.
- :func:`diff_augment`: DiffAugment (Zhao et al., NeurIPS 2020) colour (brightness, saturation, contrast),
  translation (1/8 of the side, zero fill) and optional cutout (half the side), the same differentiable transforms
  on real and fake images.
- Losses: hinge with FastGAN's random real margin (``relu(U(0.8, 1) - D(x))``), ``relu(U(0.8, 1) + D(G(z)))``,
  generator ``-D(G(z))``; reconstruction by LPIPS-VGG (when its weights are present) or L1 + (1 - SSIM).

Every random draw takes an explicit ``torch.Generator`` (noise injection, augmentation, the quarter cropped), so
training is a pure function of the seed and resumable bit-identically from the generator's saved state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

RESOLUTIONS = (64, 128, 256, 512)
AUGMENTATIONS = ("color", "translation", "cutout")

#: channel multipliers per feature resolution (times ngf / ndf), as in the paper's code
_G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25}
_D_MULT = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25}


def small_side(resolution: int) -> int:
    """Side of the auxiliary output and of the reconstructions: ``min(resolution, 128)``."""
    return min(int(resolution), 128)


def _channels(mult: dict[int, float], width: int) -> dict[int, int]:
    return {r: max(1, int(m * width)) for r, m in mult.items()}


def _conv(cin: int, cout: int, k: int, s: int = 1, p: int = 0, bias: bool = False) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, k, s, p, bias=bias))


class _NoiseInjection(nn.Module):
    """``x + w * noise`` with a learned scalar ``w`` (zero at start) and per-pixel Gaussian noise."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape
        noise = torch.randn((b, 1, h, w), generator=gen, device="cpu").to(x.device, x.dtype)
        return x + self.weight * noise


class _UpBlock(nn.Module):
    """x2 nearest up-sampling, 3 x 3 conv to 2 * cout, BN, GLU; ``double``: noise injection and a second conv."""

    def __init__(self, cin: int, cout: int, double: bool) -> None:
        super().__init__()
        self.double = double
        self.conv1 = _conv(cin, cout * 2, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(cout * 2)
        if double:
            self.noise1, self.noise2 = _NoiseInjection(), _NoiseInjection()
            self.conv2 = _conv(cout, cout * 2, 3, 1, 1)
            self.bn2 = nn.BatchNorm2d(cout * 2)

    def forward(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        x = self.conv1(F.interpolate(x, scale_factor=2, mode="nearest"))
        if self.double:
            x = self.noise1(x, gen)
        x = F.glu(self.bn1(x), dim=1)
        if self.double:
            x = F.glu(self.bn2(self.noise2(self.conv2(x), gen)), dim=1)
        return x


class _SLE(nn.Module):
    """Skip-layer excitation: a low-resolution feature gates the channels of a high-resolution one.
    ``n_classes`` > 0: a class embedding is added to the gate's pre-activation (conditional mode)."""

    def __init__(self, c_small: int, c_big: int, n_classes: int = 0) -> None:
        super().__init__()
        self.squeeze = _conv(c_small, c_big, 4)
        self.excite = _conv(c_big, c_big, 1)
        self.embed = nn.Embedding(n_classes, c_big) if n_classes else None
        if self.embed is not None:
            nn.init.zeros_(self.embed.weight)

    def forward(self, small: torch.Tensor, big: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.silu(self.squeeze(F.adaptive_avg_pool2d(small, 4)))
        h = self.excite(h)
        if self.embed is not None and y is not None:
            h = h + self.embed(y)[:, :, None, None]
        return big * torch.sigmoid(h)


class FastGANGenerator(nn.Module):
    """``(z (B, nz), y (B,) or None) -> (image (B, 3, R, R), small (B, 3, S, S))`` in [-1, 1]."""

    def __init__(self, resolution: int = 256, nz: int = 256, ngf: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
        self.resolution, self.nz, self.n_classes = int(resolution), int(nz), int(n_classes)
        ch = _channels(_G_MULT, ngf)
        self.init = spectral_norm(nn.ConvTranspose2d(nz, ch[4] * 2, 4, 1, 0, bias=False))
        self.init_bn = nn.BatchNorm2d(ch[4] * 2)
        self.sides = [2 ** k for k in range(3, resolution.bit_length())]  # 8 .. R
        self.ups = nn.ModuleList(_UpBlock(ch[s // 2], ch[s], double=(k % 2 == 0)) for k, s in enumerate(self.sides))
        # SLE: 4 -> 64, 8 -> 128, 16 -> 256, 32 -> 512 (those within R)
        self.sle = nn.ModuleDict({str(s): _SLE(ch[s // 16], ch[s], n_classes) for s in self.sides if s >= 64})
        self.to_small = _conv(ch[small_side(resolution)], 3, 1)
        self.to_big = _conv(ch[resolution], 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None,
                gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.glu(self.init_bn(self.init(z.view(len(z), -1, 1, 1))), dim=1)
        feats = {4: x}
        small = None
        for side, up in zip(self.sides, self.ups):
            x = up(x, gen)
            if str(side) in self.sle:
                x = self.sle[str(side)](feats[side // 16], x, y)
            feats[side] = x
            if side == small_side(self.resolution):
                small = torch.tanh(self.to_small(x))
        return torch.tanh(self.to_big(x)), small


class _DownBlock(nn.Module):
    """4 x 4 stride-2 conv, BN, LeakyReLU; ``residual``: + a 3 x 3 conv, averaged with an avg-pool + 1 x 1 conv path
    (the paper's "DownBlockComp")."""

    def __init__(self, cin: int, cout: int, residual: bool) -> None:
        super().__init__()
        layers = [_conv(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        if residual:
            layers += [_conv(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        self.main = nn.Sequential(*layers)
        self.direct = (nn.Sequential(nn.AvgPool2d(2, 2), _conv(cin, cout, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))
                       if residual else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) if self.direct is None else (self.main(x) + self.direct(x)) / 2


class _Decoder(nn.Module):
    """Pool a feature to 8 x 8 and up-sample it to ``side`` px RGB in [-1, 1] (the self-supervised decoders)."""

    def __init__(self, cin: int, side: int, ndf: int) -> None:
        super().__init__()
        ch = _channels({16: 4, 32: 2, 64: 2, 128: 1}, ndf)
        blocks, c = [], cin
        s = 16
        while s <= side:
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(c, ch[s] * 2, 3, 1, 1),
                       nn.BatchNorm2d(ch[s] * 2), nn.GLU(dim=1)]
            c, s = ch[s], s * 2
        self.net = nn.Sequential(*blocks, _conv(c, 3, 3, 1, 1, bias=True), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.adaptive_avg_pool2d(x, 8))


class FastGANDiscriminator(nn.Module):
    """``(image (B,3,R,R), small (B,3,S,S))`` -> logits ``(B, 50)`` (two 5 x 5 maps), and on real images (``part``
    given: which quarter, 0..3) the reconstructions ``(whole, small, quarter)`` each ``(B, 3, S, S)``; in conditional
    mode also class logits ``(B, n_classes)``."""

    def __init__(self, resolution: int = 256, ndf: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        R, S = int(resolution), small_side(resolution)
        ch = _channels(_D_MULT, ndf)
        top = min(R, 256)
        stem: list[nn.Module] = []
        side, c = R, 3
        while side > top:  # 512 -> 256 by stride-2 convs
            stem += [_conv(c, ch[side // 2], 4, 2, 1), nn.LeakyReLU(0.2)]
            side, c = side // 2, ch[side // 2]
        if not stem:
            stem = [_conv(3, ch[top], 3, 1, 1), nn.LeakyReLU(0.2)]
        self.stem = nn.Sequential(*stem)
        self.down_sides = [top // 2 ** k for k in range(1, (top // 8).bit_length())]  # top/2 .. 8
        self.downs = nn.ModuleList(_DownBlock(ch[s * 2], ch[s], residual=True) for s in self.down_sides)
        # SLE from the feature 8x larger: 256 -> 32, 128 -> 16, 64 -> 8 (those present)
        self.sle = nn.ModuleDict({str(s): _SLE(ch[s * 8], ch[s]) for s in self.down_sides if s * 8 <= top and s <= 32})
        self.logits_big = nn.Sequential(_conv(ch[8], ch[4], 1), nn.BatchNorm2d(ch[4]), nn.LeakyReLU(0.2),
                                        _conv(ch[4], 1, 4))
        small_layers: list[nn.Module] = [_conv(3, ch[S // 2], 4, 2, 1), nn.LeakyReLU(0.2)]
        s = S // 2
        while s > 8:
            small_layers.append(_DownBlock(ch[s], ch[s // 2], residual=False))
            s //= 2
        self.small_path = nn.Sequential(*small_layers)
        self.logits_small = _conv(ch[8], 1, 4)
        self.decode_whole = _Decoder(ch[8], S, ndf)
        self.decode_part = _Decoder(ch[16], S, ndf)
        self.decode_small = _Decoder(ch[8], S, ndf)
        self.classify = nn.Linear(ch[8], n_classes) if n_classes else None

    def forward(self, image: torch.Tensor, small: torch.Tensor, part: int | None = None):
        x = self.stem(image)
        feats = {x.shape[-1]: x}
        for side, down in zip(self.down_sides, self.downs):
            x = down(x)
            if str(side) in self.sle:
                x = self.sle[str(side)](feats[side * 8], x, None)
            feats[side] = x
        fs = self.small_path(small)
        logits = torch.cat([self.logits_big(x).flatten(1), self.logits_small(fs).flatten(1)], dim=1)
        class_logits = None if self.classify is None else self.classify(x.mean((2, 3)))
        if part is None:
            return logits, None, class_logits
        quarter = crop_quarter(feats[16], part)
        recs = (self.decode_whole(x), self.decode_small(fs), self.decode_part(quarter))
        return logits, recs, class_logits


def crop_quarter(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quarter ``part`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of ``x (B, C, H, W)``."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    r, c = divmod(int(part), 2)
    return x[..., r * h:(r + 1) * h, c * w:(c + 1) * w]


def init_weights(module: nn.Module, gen: torch.Generator) -> None:
    """N(0, 0.02) conv / linear weights, N(1, 0.02) BatchNorm scales (the paper's initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            with torch.no_grad():
                nn.init.normal_(w, 0.0, 0.02, generator=gen)
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                nn.init.normal_(m.weight, 1.0, 0.02, generator=gen)
                nn.init.zeros_(m.bias)


# --- DiffAugment --------------------------------------------------------------------------------------------------


def diff_augment(x: torch.Tensor, policy: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """DiffAugment of ``x (B, 3, H, W)`` in [-1, 1]: the transforms named in ``policy`` (``color``,
    ``translation``, ``cutout``), each sample its own draw from ``gen`` (a CPU generator); shape kept."""
    b, _, h, w = x.shape

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen).to(x.device, x.dtype)

    for name in policy:
        if name == "color":
            x = x + (rand(b, 1, 1, 1) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (rand(b, 1, 1, 1) * 2) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (rand(b, 1, 1, 1) + 0.5) + mean
        elif name == "translation":
            x = _translate(x, gen, ratio=0.125)
        elif name == "cutout":
            x = _cutout(x, gen, ratio=0.5)
        else:
            raise ValueError(f"unknown augmentation '{name}'; choose among {AUGMENTATIONS}")
    return x


def _translate(x: torch.Tensor, gen: torch.Generator, ratio: float) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side in x and y, filling with zeros."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b,), generator=gen).tolist()
    dx = torch.randint(-sx, sx + 1, (b,), generator=gen).tolist()
    padded = F.pad(x, (sx, sx, sy, sy))
    return torch.stack([padded[i, :, sy - dy[i]:sy - dy[i] + h, sx - dx[i]:sx - dx[i] + w] for i in range(b)])


def _cutout(x: torch.Tensor, gen: torch.Generator, ratio: float) -> torch.Tensor:
    """Zero one square of ``ratio`` times the side per image, centred anywhere in the image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b,), generator=gen)
    cx = torch.randint(0, w + (1 - cw % 2), (b,), generator=gen)
    ys = torch.arange(h)[None, :, None] - (cy[:, None, None] - ch // 2)
    xs = torch.arange(w)[None, None, :] - (cx[:, None, None] - cw // 2)
    inside = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)
    return x * (~inside)[:, None].to(x.device, x.dtype)


# --- losses -------------------------------------------------------------------------------------------------------


def d_hinge_real(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``mean(relu(U(0.8, 1) - D(x)))``: hinge on real logits with FastGAN's random margin."""
    margin = 0.8 + 0.2 * torch.rand(logits.shape, generator=gen).to(logits.device, logits.dtype)
    return F.relu(margin - logits).mean()


def d_hinge_fake(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    margin = 0.8 + 0.2 * torch.rand(logits.shape, generator=gen).to(logits.device, logits.dtype)
    return F.relu(margin + logits).mean()


class L1SSIMLoss(nn.Module):
    """``L1 + (1 - SSIM)`` between images in [-1, 1] (torchmetrics' SSIM, data range 2): the reconstruction loss
    when LPIPS's VGG weights are not available (a deviation from the paper, recorded in the model card)."""

    name = "l1+ssim"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        return F.l1_loss(a, b) + (1.0 - ssim(a, b, data_range=2.0))


class LPIPSLoss(nn.Module):
    """LPIPS-VGG (torchmetrics' implementation and bundled linear layers) with the ImageNet VGG16 features loaded
    from ``vgg_weights`` (torchvision's ``vgg16-397923af.pth``); frozen."""

    name = "lpips-vgg"

    def __init__(self, vgg_weights: str) -> None:
        super().__init__()
        import torchvision
        from torchmetrics.functional.image.lpips import _LPIPS

        self.net = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)  # random backbone: nothing downloaded
        features = torchvision.models.vgg16(weights=None)
        features.load_state_dict(torch.load(vgg_weights, map_location="cpu", weights_only=True))
        for slice_ in (self.net.net.slice1, self.net.net.slice2, self.net.net.slice3, self.net.net.slice4,
                       self.net.net.slice5):
            for idx, layer in slice_.named_children():
                layer.load_state_dict(features.features[int(idx)].state_dict())
        self.net.eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b, normalize=False).mean()
