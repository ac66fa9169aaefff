# xtalnb: every command a fresh machine needs. `make run` = set up + main job; `make test` = set up + all tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg

.PHONY: setup hooks lab run tour test test-fast lint docs bench repro lock clean-venv

$(STAMP): requirements.txt setup.py settings.ini scripts/jupyter_server_config.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first: the CPU wheel on disk (a plain `torch` would pull the CUDA build)
	$(BIN)/pip install -q "torch==2.13.0"
	# nglview 3.1.4 has no wheel: pip builds it from its sdist (prebuilt JupyterLab extension inside, no node needed).
	# PIP_CONSTRAINT pins its isolated build environment (jupyter_packaging, setuptools-scm, ...) to requirements.txt too.
	PIP_CONSTRAINT=requirements.txt $(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	# the kernel belongs to this checkout: registered in .venv (--sys-prefix), never in the user's home
	$(BIN)/python -m ipykernel install --sys-prefix --name xtalnb --display-name "xtalnb" >/dev/null
	# Jupyter servers from .venv clean notebooks on save (nbdev; source-only lessons also lose outputs): scripts/jupyter_server_config.py
	mkdir -p $(VENV)/etc/jupyter
	ln -sf $(CURDIR)/scripts/jupyter_server_config.py $(VENV)/etc/jupyter/jupyter_server_config.py
	$(MAKE) --no-print-directory hooks
	touch $(STAMP)

# git side of notebook hygiene (.gitattributes): nbdev's merge driver for every notebook, and a clean filter that shows git
# the notebooks listed there without outputs and widget state, so running them in JupyterLab leaves `git status` clean.
hooks:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config --local merge.nbdev-merge.name "resolve conflicts with nbdev_fix" && \
	  git config --local merge.nbdev-merge.driver "$(BIN)/nbdev_merge %O %A %B %P" && \
	  git config --local filter.xtalnb-nbstrip.clean "$(BIN)/python -W ignore -c 'import sys, nbdev.clean as c; nb = c.loads(sys.stdin.read()); [x.update(outputs=[]) for x in nb[\"cells\"] if \"outputs\" in x]; nb[\"metadata\"].pop(\"widgets\", None); k = c.get_config(); c.clean_nb(nb, False, k.get(\"allowed_metadata_keys\").split(), k.get(\"allowed_cell_metadata_keys\").split(), k.clean_ids); sys.stdout.write(c.nb2str(nb))'" && \
	  git config --local filter.xtalnb-nbstrip.smudge cat && \
	  echo "git: nbdev merge driver and notebook clean filter installed"; \
	else echo "not a git checkout: git hooks skipped"; fi

setup: $(STAMP)

# Main job: a small discovery run on the shipped default (denovo-mp20): generate 128, screen (PIGEN A-D), relax <= 6 with CHGNet,
# place on the MP-20 hull, write the stable/unique/novel candidates to results/discover/<run>/ (< 5 min on 2 cores; an existing run is kept)
run: setup
	$(BIN)/xtalnb discover --model denovo-mp20 --n 128 --steps 100 --relax-n 6 --relax-max-steps 100 --jobs 2 --threads 1 --run-name make-run-$$(date -u +%Y%m%dT%H%M%SZ)

# JupyterLab on the project, from .venv (kernel "xtalnb"); open nbs/index.ipynb first
lab: setup
	env -u MPLBACKEND $(BIN)/jupyter lab --notebook-dir=. --ServerApp.default_url=/lab/tree/nbs/index.ipynb $(if $(filter 0,$(shell id -u)),--allow-root)

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
	(echo "# Pinned environment (torch==2.13.0 CPU is installed first by the Makefile). Regenerate: make lock"; echo "setuptools==80.9.0"; echo "wheel==0.48.0"; $(BIN)/pip freeze --exclude-editable | grep -v "^torch==") > requirements.txt.new && mv requirements.txt.new requirements.txt

clean-venv:
	rm -rf $(VENV)
