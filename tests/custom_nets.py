"""Networks the zoo does not know, for the tests of bringing your own model (issue 25): a small
residual CNN and a tiny vision transformer, built by callables with keyword arguments, as a
researcher's own package would have them (`tests.custom_nets:residual_cnn`)."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResidualCNN(nn.Module):
    def __init__(self, in_channels: int = 1, width: int = 8, blocks: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def residual_cnn(**kwargs) -> ResidualCNN:
    return ResidualCNN(**kwargs)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patches → tokens with a class token and positions → encoder blocks → the class token's logits.
    Its blocks give (B, 1 + patches, dim): Grad-CAM needs a reshape_transform to see a feature map."""

    def __init__(
        self,
        image: int = 8,
        patch: int = 2,
        in_channels: int = 1,
        dim: int = 16,
        depth: int = 2,
        heads: int = 2,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def tiny_vit(**kwargs) -> TinyViT:
    return TinyViT(**kwargs)


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's digits as a plain Dataset of ((1, 8, 8) float images in [0, 1], label), as a
    user's own data would come; `classes` names them. `split` None: all 1,797."""

    classes = tuple(f"digit {d}" for d in range(10))

    def __init__(self, split: str | None = None) -> None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
        y = torch.tensor(bunch.target, dtype=torch.long)
        cut = 1500
        self.x, self.y = (x, y) if split is None else ((x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:]))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def linear_net(pixels: int = 64, num_classes: int = 10) -> nn.Sequential:
    """Flatten, then one linear layer: a model whose every prediction a test can set through its bias."""
    return nn.Sequential(nn.Flatten(), nn.Linear(pixels, num_classes))
