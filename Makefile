# Two commands do all set-up on a fresh machine (see README):
#   make course            run every chapter through papermill into build/ (PROFILE=ci for a quick run)
#   make test              unit tests + every notebook under nbval in the ci profile
#                          (+ the website built from that run, checked in headless Chromium)
#   make site              the course website from the chapters `make course` executed
# Both create .venv on first use and reuse it afterwards.

PYTHON  ?= python3
VENV    ?= .venv
# PyTorch's own index for its CPU-only wheels (about 200 MB instead of several GB of CUDA
# libraries on Linux), e.g. `make env TORCH_INDEX=https://download.pytorch.org/whl/cpu`; the
# pinned versions stay those of constraints.txt.
TORCH_INDEX ?=
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= auto
CHAPTERS ?=
ARGS    ?=

# Offline machines that have the shared read-only data copy beside the checkout use it.
ifeq ($(COURSE_DATA_ROOT),)
  ifneq ($(wildcard ../shared/data/MNIST),)
    export COURSE_DATA_ROOT := $(abspath ../shared/data)
  endif
endif

.PHONY: env course test test-unit site student lab lock clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt src/diffusion_course/course/kernel.py
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 'the course needs Python 3.11 or newer; this is ' + sys.version.split()[0] + ' (set PYTHON=python3.11 or newer)')"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) --editable ".[dev]"
	$(PY) -m diffusion_course.course.kernel --sys-prefix >/dev/null
	$(PY) -c "import torch, torchvision, deepinv; print('environment ready: torch', torch.__version__, '| torchvision', torchvision.__version__, '| deepinv', deepinv.__version__)"
	@touch $@

course: $(STAMP)
	$(PY) -m diffusion_course --profile $(PROFILE) $(CHAPTERS) $(ARGS)

# nbval's run of the notebooks is kept in build/test (diffusion_course.course.nbval_record), and
# tests/test_site.py (run last) builds the website from it and opens it in Chromium.
test: $(STAMP)
	COURSE_PROFILE=ci MPLBACKEND=agg JUPYTER_PREFER_ENV_PATH=1 \
	  $(PY) -m pytest -p diffusion_course.course.nbval_record --record-executed build/test \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 tests notebooks

test-unit: $(STAMP)
	$(PY) -m pytest tests -m "not notebooks"

# The website from build/ (what `make course` executed; nothing runs twice) into build/site.
site: $(STAMP)
	$(PY) -m diffusion_course.course.site --build build --out build/site

# Every chapter with its solutions replaced by stubs, into notebooks/student/ (committed: Colab
# opens it from GitHub and the website links it; tests/test_exercises.py checks it is current).
student: $(STAMP)
	$(PY) -m diffusion_course.course.editions

lab: $(STAMP)
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab notebooks

# Re-resolve the newest stack allowed by pyproject.toml and record it in constraints.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet "torch>=2.14,<2.15" "torchvision>=0.29,<0.30" -e ".[dev]"
	{ sed -n '1,/^# Regenerate/p' constraints.txt; .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

clean:
	rm -rf build
