# Two commands on a fresh machine: `make demo` and `make test`. Each builds its venvs itself.
#
#   .venv           the pure build, editable (HITPOOL_PURE=1): the source tree is what runs
#   .venv-compiled  the compiled build (mypyc, COMPILED in src/hitpool/_build.py), installed
#                   as a wheel, never in place, and rebuilt whenever a file under src/ changes
#
# `make test` = lint + types + the suite on the pure build + the suite on the compiled build.
# `make HITPOOL_PURE=1 test` (or demo) leaves the compiled build out, for a machine without a
# C compiler; otherwise the compiled build is required and a failed compile stops make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CVENV := .venv-compiled
CBIN := $(CVENV)/bin
CSTAMP := $(CVENV)/.installed
# Every file the compiled wheel is made from: an edit to any of them rebuilds it. (Not the
# metadata that installs write into src/hitpool.egg-info, nor bytecode.)
SOURCES := $(shell find src -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*' \
	-not -name '*.py[co]')
# The suite never imports a source tree named by the caller's environment: each venv runs
# the build installed in it.
PYTEST = env -u PYTHONPATH HITPOOL_EXPECT_BUILD=$(1) $(2)/python -m pytest -q -p no:cacheprovider

.PHONY: demo test lint types unit unit-pure unit-compiled compiled clean

$(STAMP): pyproject.toml setup.py scripts/system-deps.sh scripts/requirements.py
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	HITPOOL_PURE=1 $(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# The dependencies first (mypyc type-checks against them), then the wheel alone, built from
# scratch: build/ holds the generated C and mypy's cache of the last build.
$(CSTAMP): pyproject.toml setup.py scripts/system-deps.sh scripts/requirements.py $(SOURCES)
	bash scripts/system-deps.sh
	test -x $(CBIN)/python || $(PY) -m venv $(CVENV)
	$(CBIN)/pip install -q --upgrade pip
	$(CBIN)/python scripts/requirements.py build runtime dev bench | $(CBIN)/pip install -q -r /dev/stdin
	rm -rf build
	@echo "compiling the modules of COMPILED (src/hitpool/_build.py) with mypyc: about 2 minutes"
	HITPOOL_PURE=0 $(CBIN)/pip install -q --no-build-isolation --no-deps --force-reinstall .
	rm -rf build
	cd / && env -u PYTHONPATH $(abspath $(CBIN))/python -c 'from hitpool._build import build; \
		b = build(); print("installed the", b, "build"); raise SystemExit(b != "compiled")'
	touch $(CSTAMP)

compiled: $(CSTAMP)

ifeq ($(HITPOOL_PURE),1)
RUN_BIN := $(BIN)
RUN_STAMP := $(STAMP)
UNITS := unit-pure
else
RUN_BIN := $(CBIN)
RUN_STAMP := $(CSTAMP)
UNITS := unit-pure unit-compiled
endif

demo: $(RUN_STAMP)
	$(RUN_BIN)/python -m hitpool.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts setup.py
	$(BIN)/ruff format --check src tests benchmarks scripts setup.py
	$(BIN)/python scripts/check_compiled.py

types: $(STAMP)
	$(BIN)/mypy

unit-pure: $(STAMP)
	$(call PYTEST,pure,$(BIN))

unit-compiled: $(CSTAMP)
	$(call PYTEST,compiled,$(CBIN))

unit: $(UNITS)

test: lint types unit

# Every artifact: both venvs, the build tree and metadata, and any extension module or
# generated C that an in-place build (`python setup.py build_ext --inplace`) left in src/.
clean:
	rm -rf $(VENV) $(CVENV) build *.egg-info src/*.egg-info .mypy_cache
	find src tests \( -name '*.so' -o -name '*.pyd' -o -name '*.c' \) -delete
