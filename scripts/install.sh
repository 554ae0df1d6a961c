#!/usr/bin/env bash
# Installs everything oodgen needs on a fresh Debian/Ubuntu machine into a virtual environment
# (default .venv; a stock Debian/Ubuntu Python refuses `pip install` outside one, PEP 668):
# the Fashion-MNIST files from Debian (when run as root and they are missing), PyTorch's CPU
# build pinned to 2.13.0 (an unpinned torch pulls a multi-GB CUDA build), then oodgen itself
# with its test extras.  VENV= (empty) installs into $PYTHON's own environment instead.
# Users with their own torch build: skip this script and `pip install -e .` (torch >=2.1,<2.14).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV-.venv}

as_root_apt() {   # apt-get install "$@" when we are root on a Debian-like system; else fail
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || return 1
  [ -n "${_APT_UPDATED:-}" ] || { apt-get update -qq; _APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  as_root_apt dataset-fashion-mnist || echo "install.sh: Fashion-MNIST not installed (needs root + apt); see README 'Data'" >&2
fi

if [ -n "$VENV" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
      # Debian/Ubuntu ship venv's pip bootstrap separately (python3.X-venv).
      rm -rf "$VENV"
      ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      as_root_apt "python$ver-venv" || as_root_apt python3-venv || {
        echo "install.sh: '$PY -m venv' failed; install python$ver-venv (apt) or run with VENV= to use $PY directly" >&2
        exit 1; }
      "$PY" -m venv "$VENV"
    fi
  fi
  PY="$VENV/bin/python"
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e '.[test]'
echo "install.sh: installed into $("$PY" -c 'import sys; print(sys.prefix)')${VENV:+ (activate with: . $VENV/bin/activate)}"
