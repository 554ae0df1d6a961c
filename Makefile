# `make quick`: install everything and run the README's main job; `make test`: install and test.
PYTHON ?= python3

.PHONY: install quick test

install:
	PYTHON=$(PYTHON) ./scripts/install.sh

quick: install
	oodgen run --id mnist --profile quick --out runs/mnist-quick

test: install
	$(PYTHON) -m pytest -q
