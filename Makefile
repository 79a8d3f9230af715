# mechverify — every target sets up .venv from requirements.lock (+ the pinned optional
# extras in requirements-extras.lock, so their tests run too) when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup verify test figures bench readme clean

$(STAMP): requirements.lock requirements-extras.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-extras.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

verify: $(STAMP)
	$(PY) -m pytest verify/ $(PYTEST_ARGS)

test: $(STAMP)
	$(PY) -m pytest tests/ verify/ $(PYTEST_ARGS)
	$(PY) -m pytest examples/

figures: $(STAMP)
	$(PY) -m mechverify.paper_figures --all --quick
	$(PY) -m pytest tests/test_figure_bytes.py -m figures -q

bench: $(STAMP)
	$(PY) -m bench

readme: $(STAMP)
	$(PY) -m verify.readme_tables --write README.md

clean:
	rm -rf $(VENV) build *.egg-info
