"""Type I (off-manifold) boundary outliers: perturb a training image along a random unit
direction in the left null space of the decoder's Jacobian (paper section 3.1, eq. 2).

x_ood = clip(x + s * beta * v, 0, 1),  J(x)^T v = 0,  |v| = 1,  s = +-1 at random.

Two ways to draw v (``nullspace=``):

``"uniform"`` (default, the paper's wording): project isotropic Gaussian noise off the column
    space of J (reduced QR of the 784 x d Jacobian) and normalise.  The projection of an isotropic
    Gaussian onto a subspace is isotropic within it, so v is uniform on the null space's unit
    sphere.  O(784 d) per sample; no 776-vector basis is ever formed.
``"rref"`` (the authors' code): sympy's reduced-row-echelon basis of null(J^T): pivots on the
    first d linearly independent pixels, one basis vector per free pixel (1 at that pixel, a
    solve against the pivot block at the pivots), each normalised, combined with U(-1, 1)
    coefficients, normalised.  Formed here in closed form, without sympy.

Beta ranges (``beta=``): ``"paper"`` U[0.1, 1]; ``"authors"`` U[0.1, 28] (the authors' code for
MNIST, F-MNIST and F-MNIST 0-4); ``"wide"`` log-uniform on [0.1, 28] (beyond the paper: as many
steps in [0.1, 1] as in [1, 5.3] and [5.3, 28], so near-boundary and far samples both occur);
or an explicit ``(low, high)`` (uniform).

Clipping (``clip=``): ``True`` clips to [0, 1] (the authors' code); ``False`` keeps x + s beta v
(the paper's eq. 2 as written, samples may leave [0, 1]); ``"half"`` clips a random half.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacfwd, vmap

BETA_RANGES = {"paper": (0.1, 1.0), "authors": (0.1, 28.0), "wide": (0.1, 28.0)}
LOG_UNIFORM = ("wide",)
NULLSPACE_METHODS = ("uniform", "rref")


def beta_range(beta: str | tuple[float, float]) -> tuple[float, float]:
    """Resolve a named or explicit beta range to (low, high)."""
    if isinstance(beta, str):
        if beta not in BETA_RANGES:
            raise ValueError(f"unknown beta range {beta!r}; use one of {sorted(BETA_RANGES)} or (low, high)")
        return BETA_RANGES[beta]
    low, high = (float(b) for b in beta)
    if not 0 <= low <= high:
        raise ValueError(f"beta range must satisfy 0 <= low <= high, got ({low}, {high})")
    return low, high


def decoder_jacobian(decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Batched Jacobian d decode(z, cond) / dz, shape (B, D, d) with D the flattened output size.

    Forward-mode (``jacfwd``) under ``vmap``: d forward-mode passes of the whole batch, no loop
    over pixels or samples.  ``decode`` maps one (d,) latent and its condition to an output.
    """
    def flat(z1: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        return decode(z1.unsqueeze(0), c1.unsqueeze(0)).reshape(-1)

    return vmap(jacfwd(flat, argnums=0))(z, cond)


def sequential_jacobian(net: nn.Sequential, inputs: torch.Tensor, n_dirs: int,
                        output_sigmoid: bool = False) -> torch.Tensor:
    """Jacobian of ``net`` (a Sequential of Linear / Conv / ConvTranspose / ReLU / Sigmoid / Tanh /
    (Un)Flatten layers) w.r.t. the first ``n_dirs`` input coordinates, shape (B, D, n_dirs).

    Forward-mode by hand: one primal pass on B inputs and one tangent pass on B * n_dirs
    tangents through the same layers without biases, with each activation's derivative taken
    from the primal pass.  That is the d + 1 forward-pass cost, with no per-sample overhead.
    """
    bsz = inputs.shape[0]
    h = inputs
    eye = torch.zeros(n_dirs, inputs.shape[1], dtype=inputs.dtype, device=inputs.device)
    eye[:, :n_dirs] = torch.eye(n_dirs, dtype=inputs.dtype, device=inputs.device)
    t = eye.repeat(bsz, 1)                       # sample-major: rows b*n_dirs ... b*n_dirs + d - 1

    def rep(a: torch.Tensor) -> torch.Tensor:
        return a.repeat_interleave(n_dirs, dim=0)

    layers = list(net) + ([nn.Sigmoid()] if output_sigmoid else [])
    for layer in layers:
        if isinstance(layer, nn.Linear):
            h, t = layer(h), F.linear(t, layer.weight)
        elif isinstance(layer, nn.ConvTranspose2d):
            h = layer(h)
            t = F.conv_transpose2d(t, layer.weight, None, layer.stride, layer.padding,
                                   layer.output_padding, layer.groups, layer.dilation)
        elif isinstance(layer, nn.Conv2d):
            h = layer(h)
            t = F.conv2d(t, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        elif isinstance(layer, nn.ReLU):
            t = t * rep(h > 0)
            h = F.relu(h)
        elif isinstance(layer, nn.Sigmoid):
            h = torch.sigmoid(h)
            t = t * rep(h * (1 - h))
        elif isinstance(layer, nn.Tanh):
            h = torch.tanh(h)
            t = t * rep(1 - h * h)
        elif isinstance(layer, (nn.Flatten, nn.Unflatten, nn.Identity)):
            h, t = layer(h), layer(t)
        else:
            raise TypeError(f"sequential_jacobian: unsupported layer {type(layer).__name__}; "
                            "use decoder_jacobian (torch.func) for arbitrary decoders")
    return t.reshape(bsz, n_dirs, -1).transpose(1, 2)


def uniform_null_direction(jac: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit vectors uniform in the left null space of each Jacobian (B, D, d) -> (B, D)."""
    q, _ = torch.linalg.qr(jac.double(), mode="reduced")
    # Random numbers are drawn on the CPU (and moved) so that a seed means the same on every device.
    g = torch.randn(jac.shape[:2], generator=generator, dtype=torch.float64).to(jac.device)
    v = g - torch.einsum("bdk,bk->bd", q, torch.einsum("bdk,bd->bk", q, g))
    return (v / v.norm(dim=1, keepdim=True)).to(jac.dtype)


def _pivot_rows(j: torch.Tensor, tol: float = 1e-12) -> torch.Tensor:
    """Indices of the first d linearly independent rows of one (D, d) Jacobian (row-major order)."""
    d = j.shape[1]
    first = torch.arange(d, device=j.device)
    if torch.linalg.matrix_rank(j[:d], rtol=tol) == d:
        return first
    chosen: list[int] = []
    basis = torch.zeros(0, d, dtype=j.dtype, device=j.device)
    scale = j.abs().max().clamp_min(1e-300)
    for i in range(j.shape[0]):
        r = j[i] - (basis.T @ (basis @ j[i]) if len(chosen) else 0)
        if r.norm() > tol * scale:
            chosen.append(i)
            basis = torch.cat([basis, (r / r.norm()).unsqueeze(0)])
            if len(chosen) == d:
                break
    if len(chosen) < d:
        raise ValueError(f"decoder Jacobian has rank {len(chosen)} < latent dimension {d}")
    return torch.tensor(chosen, device=j.device)


def rref_null_direction(jac: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The authors' direction: U(-1, 1) combination of the normalised RREF null-space basis."""
    jac = jac.double()
    bsz, dim, d = jac.shape
    out = torch.empty(bsz, dim, dtype=torch.float64, device=jac.device)
    for b in range(bsz):
        j = jac[b]
        pivots = _pivot_rows(j)
        free = torch.ones(dim, dtype=torch.bool, device=jac.device)
        free[pivots] = False
        # Basis vector for free pixel f: 1 at f, a = -(J_P^T)^-1 J_f^T at the pivot pixels.
        a = -torch.linalg.solve(j[pivots].T, j[free].T)             # (d, D - d)
        norms = torch.sqrt(1.0 + (a * a).sum(0))
        c = (torch.rand(dim - d, generator=generator, dtype=torch.float64).to(jac.device) * 2 - 1) / norms
        v = torch.zeros(dim, dtype=torch.float64, device=jac.device)
        v[free] = c
        v[pivots] = a @ c
        out[b] = v / v.norm()
    return out.to(torch.float32)


def perturb(x: torch.Tensor, direction: torch.Tensor, beta: str | tuple[float, float] = "paper",
            generator: torch.Generator | None = None, clip: bool | str = True) -> torch.Tensor:
    """x + s * beta * v with beta drawn from the named range and a random sign s, then clipped
    to [0, 1] (``clip=True``), not clipped (``False``) or a random half clipped (``"half"``)."""
    low, high = beta_range(beta)
    n = x.shape[0]
    u = torch.rand(n, generator=generator).to(x.device)
    if isinstance(beta, str) and beta in LOG_UNIFORM:
        b = low * (high / low) ** u
    else:
        b = low + (high - low) * u
    sign = torch.randint(0, 2, (n,), generator=generator).to(x.device) * 2 - 1
    out = x + (sign * b).view(n, *([1] * (x.dim() - 1))) * direction.view_as(x)
    if clip == "half":
        keep = (torch.rand(n, generator=generator).to(x.device) < 0.5).view(n, *([1] * (x.dim() - 1)))
        return torch.where(keep, out.clamp(0.0, 1.0), out)
    if clip not in (True, False):
        raise ValueError(f"clip must be True, False or 'half', got {clip!r}")
    return out.clamp(0.0, 1.0) if clip else out


TYPE1_BATCH = 256              # images per Jacobian batch up to TYPE1_BATCH_VALUES values per image
TYPE1_BATCH_VALUES = 4096


def type1_batch(shape) -> int:
    """Images per Type I batch for images of ``shape`` (C, H, W): 256 up to 4,096 values per image
    (28x28x1, 32x32x3), then halved as the images grow (64 at 64x64x3): the batch Jacobian holds
    batch x (C*H*W) x d values, and past a few MB per batch it leaves the cache.  Measured by
    ``benchmarks/bench_generation_shapes.py``: at 64x64x3 a batch of 256 ran at 2.06x the
    d + 1 decoder-pass bound, a batch of 64 at 1.15x; at 28x28x1 256 beat 64 (1.10x vs 1.27x)."""
    values = 1
    for v in shape:
        values *= int(v)
    batch = TYPE1_BATCH
    while batch > 8 and batch * values > TYPE1_BATCH * TYPE1_BATCH_VALUES:
        batch //= 2
    return batch


@torch.no_grad()
def off_manifold_samples(cvae, x: torch.Tensor, y: torch.Tensor, *, beta: str | tuple[float, float] = "paper",
                         nullspace: str = "uniform", generator: torch.Generator | None = None,
                         batch_size: int | None = None, clip: bool | str = True) -> torch.Tensor:
    """Type I outliers for images ``x`` (N, C, H, W) with labels ``y`` using a trained CVAE.

    The Jacobian is taken at the encoder mean with the true-label one-hot (as in the paper's
    footnote 1 and the authors' code).  ``batch_size`` None: :func:`type1_batch` of the image shape.
    """
    if batch_size is None:
        batch_size = type1_batch(x.shape[1:])
    if nullspace not in NULLSPACE_METHODS:
        raise ValueError(f"unknown nullspace method {nullspace!r}; use one of {NULLSPACE_METHODS}")
    direction_fn = uniform_null_direction if nullspace == "uniform" else rref_null_direction
    was_training = cvae.training
    cvae.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        mu, _ = cvae.encode(xb, yb)
        if hasattr(cvae.decoder, "jacobian"):
            jac = cvae.decoder.jacobian(mu, cvae.onehot(yb))
        else:
            with torch.enable_grad():
                jac = decoder_jacobian(cvae.decoder, mu, cvae.onehot(yb))
        v = direction_fn(jac, generator)
        out.append(perturb(xb, v, beta, generator, clip))
    cvae.train(was_training)
    return torch.cat(out) if out else x.new_empty((0, *x.shape[1:]))
