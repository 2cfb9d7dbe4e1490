# Two entry points for a fresh machine; each sets itself up (virtualenv +
# editable install) and is quick when that is already done.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp

.PHONY: demo test lint bench setup clean browser

setup: $(STAMP)

# Reinstall only when the package metadata changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,geo,hub,cv,lite,ray,video,pretrained]"
	touch $(STAMP)

## The main job on the bundled sample data (no downloads).
demo: $(STAMP)
	$(BIN)/python tools/demo.py --out out/demo

## Headless Chromium for the HTML viewer's browser test (Debian package), when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	    && echo "installed chromium" || echo "warning: could not install chromium; the browser test will be skipped"; }

## The test suite (fails if no tests are collected), on both cores: two pytest-xdist
## workers, each test file on one worker (its module fixtures built once).
## PYTEST_XDIST= runs in one process.
PYTEST_XDIST ?= -n 2 --dist loadfile
test: $(STAMP) browser
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -q -ra $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check detect tests tools

bench: $(STAMP)
	$(BIN)/python tools/benchmark_ops.py

clean:
	rm -rf $(VENV) out .pytest_cache
