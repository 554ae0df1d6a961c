#!/usr/bin/env bash
# Installs everything oodgen needs on a fresh Debian machine: the Fashion-MNIST files from
# Debian (when run as root and they are missing), PyTorch's CPU build pinned to 2.13.0 (an
# unpinned torch pulls a multi-GB CUDA build), then oodgen itself with its test extras.
# Users with their own torch build: skip this script and `pip install -e .` (torch >=2.1,<2.14).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null \
   && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e '.[test]'
