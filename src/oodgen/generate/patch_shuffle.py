"""Beyond the paper: patch-shuffled training images as an extra outlier pool (``--extra-outliers patch-shuffle``).

Each image is cut into a :data:`GRID` x :data:`GRID` grid of tiles (28 x 28: 7 x 7 pixels each) whose places
are permuted, a different permutation per image; pixels beyond the last whole tile stay where they are.  The
tiles keep the training images' strokes and textures and lose their arrangement: an image that is locally
like the data but globally like none of it, which neither Type I (a step off the decoder's manifold) nor
Type II (a decoded point on the class ellipsoid) makes.  Shuffled-patch images as outliers are an idea of the
self-supervised OOD literature (e.g. the jigsaw pretext task); here they are one named option of the n+1
classifier's training, off by default (the paper's method trains on Type I and Type II alone).
"""
from __future__ import annotations

import torch

GRID = 4            # tiles per side


def patch_shuffled(x: torch.Tensor, generator: torch.Generator, grid: int | tuple[int, int] = GRID) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) with their ``grid`` x ``grid`` tiles (or ``(rows, columns)``) permuted, each
    image by its own permutation drawn from ``generator``; ``grid=(H, W)`` permutes single pixels (the
    selection's ``pixel-shuffle`` signal, :func:`oodgen.selection.shifted`)."""
    if x.dim() != 4:
        raise ValueError(f"patch_shuffled: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    th, tw = h // gh, w // gw
    if th < 1 or tw < 1:
        raise ValueError(f"patch_shuffled: {h} x {w} images are smaller than a {gh} x {gw} grid")
    out = x.clone()
    region = x[:, :, :th * gh, :tw * gw]
    tiles = region.reshape(n, c, gh, th, gw, tw).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c, th, tw)
    order = torch.argsort(torch.rand(n, gh * gw, generator=generator), dim=1).to(x.device)
    tiles = torch.gather(tiles, 1, order[:, :, None, None, None].expand_as(tiles))
    out[:, :, :th * gh, :tw * gw] = tiles.reshape(n, gh, gw, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(
        n, c, th * gh, tw * gw)
    return out
