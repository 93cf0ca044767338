# One-command entry points. Everything installs into .venv with pinned versions (requirements.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config_miniset.yaml

.PHONY: demo test bench browser clean-data help

help:
	@echo "make demo   - set up .venv and run the pipeline on the bundled sample ($(CONFIG))"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make bench  - set up .venv and run every stage's benchmark on a small real set (bench/out/report.md)"

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

DEMO_QUERY ?= sample/caltech101-mini/Leopards/image_0002.jpg

demo: $(STAMP)
	$(BIN)/imagerec --config $(CONFIG) index
	$(BIN)/imagerec --config $(CONFIG) build-ann
	$(BIN)/imagerec --config $(CONFIG) query --image $(DEMO_QUERY) --top-k 10 --output data/miniset/demo_query.png
	$(BIN)/imagerec --config $(CONFIG) status
	@echo "contact sheet: data/miniset/demo_query.png"
	@echo "browse it and explore similar images: $(BIN)/imagerec --config $(CONFIG) serve --open   (http://127.0.0.1:8765/)"

# The browser tests (tests/integration/web) drive Debian's chromium through Playwright (pinned in requirements.lock;
# Playwright cannot download browsers here): installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean-data:
	rm -rf data/miniset
