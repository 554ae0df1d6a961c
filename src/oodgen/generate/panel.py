"""A fixed panel of generated outliers for choosing options without any test OOD set.

Options of the method (the Type I beta range and clipping, the Type II radius, a score rule)
must be chosen on in-distribution validation data and generated outliers only.  Every run
scores the same panel, made with its own CVAE from validation images, whichever variant it was
trained with, so runs that share a CVAE (same setting, seed and CVAE options) are compared on
identical images:

* ``type1-paper``: Type I, beta ~ U[0.1, 1], clipped (the paper);
* ``type1-authors``: Type I, beta ~ U[0.1, 28], clipped (the authors' code);
* ``type1-wide-half``: Type I, beta log-uniform on [0.1, 28], a random half clipped;
* ``type2-surface`` / ``type2-shell``: Type II on the 95 % ellipsoid / in U(r, 1.5 r).

The selection criterion is the mean AUROC (validation images vs each component) over the panel.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from ..utils import atomic_write_bytes, generator
from .off_manifold import off_manifold_samples
from .on_manifold import ClassEllipsoids, on_manifold_samples

TYPE1_PANEL = {"type1-paper": ("paper", True), "type1-authors": ("authors", True),
               "type1-wide-half": ("wide", "half")}
TYPE2_PANEL = {"type2-surface": "surface", "type2-shell": "shell"}
N_PANEL = 1000


def generated_panel(cvae, ellipsoids: ClassEllipsoids, x: torch.Tensor, y: torch.Tensor, seed: int,
                    n: int = N_PANEL) -> dict[str, torch.Tensor]:
    """The panel's components, ``n`` images each (fewer if ``x`` is smaller), on the CPU."""
    device = next(cvae.parameters()).device
    n = min(n, len(x))
    panel = {}
    for name, (beta, clip) in TYPE1_PANEL.items():
        gen = generator(seed, "panel", name)
        idx = torch.randperm(len(x), generator=gen)[:n]
        panel[name] = off_manifold_samples(cvae, x[idx].to(device), y[idx].to(device), beta=beta,
                                           nullspace="uniform", generator=gen, clip=clip).cpu()
    for name, radius in TYPE2_PANEL.items():
        gen = generator(seed, "panel", name)
        labels = y[torch.randint(0, len(y), (n,), generator=gen)].cpu()
        panel[name] = on_manifold_samples(cvae, ellipsoids, labels, radius=radius, generator=gen).cpu()
    return panel


def cached_panel(path: Path | None, cvae, ellipsoids: ClassEllipsoids, x: torch.Tensor, y: torch.Tensor,
                 seed: int) -> dict[str, torch.Tensor]:
    """:func:`generated_panel`, kept in ``path`` (a run's checkpoints folder) so that re-evaluating a
    finished run does not generate it again (``path`` None: not kept).

    The file is used only when it was made from the same CVAE weights, images and seed (a SHA-256 over
    all three); anything else - a retrained CVAE, another split, a damaged file - means the panel is
    generated again and the file rewritten."""
    if path is None:
        return generated_panel(cvae, ellipsoids, x, y, seed)
    h = hashlib.sha256(f"panel v1 seed={seed} n={N_PANEL}".encode())
    for t in [*cvae.state_dict().values(), x, y]:
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    key = h.hexdigest()
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key:
                return saved["images"]
        except Exception:       # damaged or foreign: regenerate below
            pass
    panel = generated_panel(cvae, ellipsoids, x, y, seed)
    buf = io.BytesIO()
    torch.save({"key": key, "images": panel}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return panel
