# xtalnb: every command a fresh machine needs. `make run` = set up + main job; `make test` = set up + all tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg

.PHONY: setup run tour test test-fast lint docs bench repro lock clean-venv

$(STAMP): requirements.txt setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first: the CPU wheel on disk (a plain `torch` would pull the CUDA build)
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --user --name xtalnb --display-name "Python (xtalnb)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# Main job on the shipped default: sample with denovo-mp20, evaluate, write figures/demo_denovo-mp20.*
run: setup
	$(BIN)/xtalnb demo --model denovo-mp20 --n 16 --out figures

tour: setup
	$(BIN)/xtalnb tour --out figures

lint: setup
	$(BIN)/ruff check --select F821,F811,F401 xtalnb

# The whole test suite: exported code in sync with notebooks, ruff, nbdev_test over nbs/, pytest tests/.
test: setup
	$(BIN)/nbdev_export
	@if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$$(git status --porcelain -- xtalnb)" ]; then \
	  echo "xtalnb/ differs from what nbs/ exports:"; git status --porcelain -- xtalnb; exit 1; fi
	$(BIN)/ruff check --select F821,F811,F401 xtalnb
	$(BIN)/nbdev_test --path nbs --n_workers 2 --timing --skip_folder_re '^([_.]|repro$$)'   # nbs/repro/: tests/test_repro.py runs them through the runner
	$(BIN)/pytest -q tests

docs: setup
	mkdir -p _docs
	$(BIN)/jupyter nbconvert --to html --output-dir _docs nbs/*.ipynb

bench: setup
	for nb in nbs/benchmarks/*.ipynb; do $(BIN)/papermill --kernel xtalnb $$nb $$nb || exit 1; done

# Reproduction notebooks (nbs/repro/) at CPU scale with papermill; unchanged ones are skipped (nbs/repro/_runs/*.json stamps)
repro: setup
	$(BIN)/xtalnb repro --scale cpu

lock:
	(echo "setuptools==80.9.0"; $(BIN)/pip freeze --exclude-editable | grep -v "^torch==") > requirements.txt.new && mv requirements.txt.new requirements.txt

clean-venv:
	rm -rf $(VENV)
