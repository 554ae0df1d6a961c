"""Small shared helpers: seeding, atomic writes, environment stamps, devices."""
from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import first_line


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from a base seed and labels (stage name, epoch...)."""
    ints = [p if isinstance(p, int) else sum((i + 1) * ord(c) for i, c in enumerate(p)) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1, np.uint64)[0] >> 1)


def generator(*parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, exclusive: bool = False) -> None:
    """Write a file so that readers see the old content or the new one, never a half-written file.
    ``exclusive``: only if no file is there, else ``FileExistsError`` (one of two processes wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)   # mkstemp creates 0600; results are meant to be read by others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive and _link(tmp, path):
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _link(tmp: str, path: Path) -> bool:
    """Hard-link ``tmp`` to ``path``, which (unlike a rename) refuses to replace a file that is there:
    ``FileExistsError``.  False on a file system without hard links (then it checks first)."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        raise
    except OSError:
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        return False


def atomic_write_json(path: str | os.PathLike, obj: Any, exclusive: bool = False) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), exclusive)


class JSONFileError(ValueError):
    """A JSON file (a run's ``config.json`` or ``metrics.json``) is unreadable or not a JSON object;
    the message names the file."""


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object stored in ``path``, or :class:`JSONFileError` that names the file and says
    whether it could not be read (a permission, a folder) or does not hold a JSON object."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JSONFileError(f"{path}: cannot read ({exc.strerror or first_line(exc)})") from None
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise JSONFileError(f"{path}: not a text file (not UTF-8); it is damaged") from None
    except json.JSONDecodeError as exc:
        raise JSONFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); it is damaged") from None
    except RecursionError:
        raise JSONFileError(f"{path}: JSON nested too deeply; it is damaged") from None
    if not isinstance(obj, dict):
        raise JSONFileError(f"{path}: holds {_JSON_TYPES.get(type(obj), type(obj).__name__)}, not a JSON object; "
                            "it is damaged")
    return obj


class TorchFileError(ValueError):
    """A file :func:`safe_torch_load` refuses: damaged, not written by ``torch.save``, or holding more
    than tensors and plain values.  The message says which, without the file's name."""


def safe_torch_load(path):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain values only, never code.
    torch's version string (a str subclass in environment stamps) is allowed too.

    Raises ``OSError`` when the file cannot be opened, and :class:`TorchFileError` when torch cannot
    load it; the latter never relays torch's advice to load the file unsafely."""
    import pickle

    import torch
    with open(path, "rb") as fh:
        try:
            with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
                return torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged or foreign file; all mean the same here
            if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower().replace("_", " "):
                raise TorchFileError("it holds objects other than tensors and plain values, which are refused "
                                     "unread (loading them could run code)") from None
            raise TorchFileError(f"not a readable torch file ({first_line(exc)})") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def git_revision() -> str | None:
    """HEAD of the source checkout (``-dirty`` if tracked files changed); where the code runs from a
    copy without ``.git`` (a lent GPU machine), the revision given in ``OODGEN_GIT_REVISION``."""
    fallback = os.environ.get("OODGEN_GIT_REVISION") or None
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return fallback
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


def environment() -> dict[str, Any]:
    """Versions and machine facts stored with every result."""
    import sklearn

    from . import __version__
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "oodgen": __version__,
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)
