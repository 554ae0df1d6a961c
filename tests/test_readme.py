"""The README's promises: it opens with use, and its Python example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_use():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200
    first = "\n".join(lines[:60])
    assert "pip install" in first and "```python" in first


def test_readme_python_example_runs():
    """The example, on 600 training images and the smoke profile (seconds instead of minutes)."""
    text = README.read_text()
    code = re.search(r"## Use it from Python\n\n```python\n(.*?)```", text, re.S).group(1)
    assert 'profile="quick"' in code and 'load("mnist", "train")' in code
    code = code.replace('profile="quick"', 'profile="smoke"').replace('load("mnist", "train")',
                                                                       'load("mnist", "train", n=600)')
    code = code.replace('load("notmnist", "test")', 'load("notmnist", "test", n=50)')
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    scores = scope["scores"]
    assert scores.shape == (50,) and np.all(np.isfinite(scores))
    assert set(scope["det"].score_all(scope["train"].images[:5])) >= {"ood-class", "reject+fisher"}
