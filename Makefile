# `make quick`: install everything and run the README's main job; `make test`: install and test.
PYTHON ?= python3

.PHONY: install quick test

install:
	PYTHON=$(PYTHON) ./scripts/install.sh

# The recommended configuration (Type I beta log-uniform [0.1, 28], half clipped), then beside it the
# committed quick run with the paper's Type I defaults, whose Sphere-OOD failure it explains.
quick: install
	oodgen run --id mnist --profile quick --out runs/mnist-quick --beta wide --clip-type1 half
	oodgen compare runs/mnist-quick results/quick/mnist-paper-seed0

test: install
	$(PYTHON) -m pytest -q
