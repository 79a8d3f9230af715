# mechverify — every target sets up .venv from requirements.lock (+ the pinned optional
# extras in requirements-extras.lock, so their tests run too) when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup verify verify-seeds test figures bench readme clean mutation ledger

$(STAMP): requirements.lock requirements-extras.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-extras.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

verify: $(STAMP)
	$(PY) -m pytest verify/ $(PYTEST_ARGS)

# Seeds 1-5 of every non-trained claim (thorough profile), then tests/test_seeds.py on their
# reports: each claim saw new instances at each seed, and none failed.
SEED_REPORTS ?= .seed-reports
verify-seeds: $(STAMP)
	mkdir -p $(SEED_REPORTS)
	status=0; for s in 1 2 3 4 5; do \
	  $(PY) -m pytest verify/ -m "not trained" --hypothesis-profile thorough --hypothesis-seed $$s \
	    --claims-report $(SEED_REPORTS)/claims-seed-$$s.json -q $(PYTEST_ARGS) || status=1; \
	done; \
	MECHVERIFY_SEED_REPORTS=$(SEED_REPORTS) $(PY) -m pytest tests/test_seeds.py -q || status=1; exit $$status

# JOBS pytest-xdist workers (one file per worker at a time, so a file's trained runs stay in one
# process), one thread each: two single-thread trainings side by side beat one two-thread one.
# JOBS=0 runs serially in this process.
JOBS ?= 2
test: $(STAMP)
	$(if $(filter 0,$(JOBS)),,OMP_NUM_THREADS=1) $(PY) -m pytest tests/ verify/ -n $(JOBS) --dist loadfile $(PYTEST_ARGS)
	$(PY) -m pytest examples/

figures: $(STAMP)
	$(PY) -m mechverify.paper_figures --all --quick
	$(PY) -m pytest tests/test_figure_bytes.py -m figures -q

bench: $(STAMP)
	$(PY) -m bench

# Mutation testing of theory/ and constructions/ (not in CI; resumable, one worker, niced).
# MUTATION_ARGS: e.g. "theory/algorithms/hmm.py --sample 0.5 --budget 3600", or "--report".
mutation: $(STAMP)
	OMP_NUM_THREADS=1 nice -n 10 $(PY) -m mutation $(MUTATION_ARGS)

# The paper-scale ledger: every trained claim at --scale paper for training seeds $(SEEDS), on
# $(DEVICE), recorded into verify/ledger.json (resumable: runs checkpoint into the cache).
SEEDS ?= 0 1 2
DEVICE ?= cpu
ledger: $(STAMP)
	for s in $(SEEDS); do \
	  $(PY) -m pytest verify/ -m trained --scale paper --device $(DEVICE) --train-seed $$s \
	    --claims-report .ledger-seed$$s.json $(PYTEST_ARGS); \
	  $(PY) -m mechverify.ledger record .ledger-seed$$s.json --scale paper --seed $$s || exit 1; \
	done

readme: $(STAMP)
	$(PY) -m verify.readme_tables --write README.md

clean:
	rm -rf $(VENV) build *.egg-info
