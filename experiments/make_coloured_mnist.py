"""Write the coloured-MNIST setting as .npz files for `oodgen run --train` (README "Your own data"):
MNIST training and test images each tinted with a random colour (oodgen.data.coloured.tint), and a
coloured Fashion-MNIST test set as an OOD set (colour noise and Sphere are added by the run itself).

    python -m experiments.make_coloured_mnist --out data/coloured-mnist
    oodgen run --train data/coloured-mnist/train.npz --test data/coloured-mnist/test.npz \
        --ood cfmnist=data/coloured-mnist/cfmnist.npz --profile quick --out runs/cmnist-quick
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from oodgen.data import load
from oodgen.data.coloured import tint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/coloured-mnist")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, seed in (("train", a.seed), ("test", a.seed + 1)):
        s = load("mnist", split)
        x = np.round(tint(s.images, seed) * 255).astype(np.uint8)
        np.savez_compressed(out / f"{split}.npz", x=x, y=s.labels)
    f = load("fmnist", "test")
    np.savez_compressed(out / "cfmnist.npz", x=np.round(tint(f.images, a.seed + 2) * 255).astype(np.uint8))
    print(f"wrote {', '.join(str(p) for p in sorted(out.glob('*.npz')))}")


if __name__ == "__main__":
    main()
