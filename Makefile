# `make quick`: install everything and run the README's main job; `make test`: install and test.
# Everything goes into a virtual environment (.venv; a stock Debian/Ubuntu Python refuses
# `pip install` outside one).  `make VENV= test` uses $(PYTHON)'s own environment instead.
PYTHON ?= python3
VENV ?= .venv
ifeq ($(strip $(VENV)),)
  PY := $(PYTHON)
  BIN :=
else
  PY := $(VENV)/bin/python
  BIN := $(VENV)/bin/
endif

.PHONY: install quick test

install:
	PYTHON=$(PYTHON) VENV=$(VENV) ./scripts/install.sh

# The recommended configuration (Type I beta log-uniform [0.1, 28], half clipped), then beside it the
# committed quick run with the paper's Type I defaults, whose Sphere-OOD failure it explains.
quick: install
	$(BIN)oodgen run --id mnist --profile quick --out runs/mnist-quick --beta wide --clip-type1 half
	$(BIN)oodgen compare runs/mnist-quick results/quick/mnist-paper-seed0

test: install
	$(PY) -m pytest -q
