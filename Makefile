# make demo / make test create .venv on first use and install fsdiff with torch pinned.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FSDIFF_DATA_DIR ?= $(abspath ../shared/data)
export FSDIFF_DATA_DIR
# glibc returns large freed blocks to the OS by default; keeping them is 3-4x faster at 64^2+.
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296
export MALLOC_TOP_PAD_ ?= 1073741824

.PHONY: demo test notebooks install bench clean pretrained docs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fsdiff demo --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q

# Every teaching notebook in a fresh kernel at its small sizes (FSDIFF_NOTEBOOK_SMALL=1, about 80 s).
notebooks: $(STAMP)
	$(PY) -m pytest -q -m notebooks tests/app/test_notebooks.py

# The documentation site (Sphinx + myst-nb) into docs/_build/html; every warning is an error.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -M html docs docs/_build -W --keep-going -q
	@echo "docs: open docs/_build/html/index.html"

# Retrain the shipped score operators from their configs (40 and 50 min; both run at once, one
# core each), export them to pretrained/ and print wall-clock and quality figures.
pretrained: $(STAMP)
	rm -rf runs/pretrained-mnist runs/pretrained-fashion
	$(VENV)/bin/fsdiff train configs/mnist.toml --run-dir runs/pretrained-mnist --threads 1 --quiet & \
	$(VENV)/bin/fsdiff train configs/fashion_mnist.toml --run-dir runs/pretrained-fashion --threads 1 --quiet & \
	wait
	$(VENV)/bin/fsdiff export runs/pretrained-mnist --out pretrained/mnist.pt --force
	$(VENV)/bin/fsdiff export runs/pretrained-fashion --out pretrained/fashion-mnist.pt --force
	$(PY) resolution_studies/mnist_quality.py --data mnist --runs single=pretrained/mnist.pt --n 256 --threads 2
	$(PY) resolution_studies/mnist_quality.py --data fashion-mnist --runs single=pretrained/fashion-mnist.pt --n 256 --threads 2

bench: $(STAMP)
	$(PY) benchmarks/bench_noise.py

clean:
	rm -rf $(VENV) demo_output docs/_build docs/_generated
