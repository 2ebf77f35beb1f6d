# medseg: set-up, demo and tests. `make demo` and `make test` set up first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# A local folder of wheels (for example a CPU build of torch), used when it exists.
WHEELS ?= /opt/wheels
FIND_LINKS := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)

export NO_ALBUMENTATIONS_UPDATE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install system-deps demo test lint bench clean

install: $(STAMP)

# Debian tools the tests drive: dciodvfy (dicom3tools) validates the DICOM SEG files medseg writes;
# echoscu/storescu/storescp (dcmtk) talk to `medseg dicom-listen`; chromium runs the viewer page of
# `medseg serve` and the evaluation report (Playwright drives this binary; it downloads no browser).
SYSTEM_TOOLS := dciodvfy:dicom3tools storescu:dcmtk chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing Debian packages:$$missing"; \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt torch
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e '.[dev]'
	@if $(PIP) list 2>/dev/null | grep -i '^nvidia-'; then \
		echo "error: CUDA packages (nvidia-*) were installed; see README 'GPU machines'"; exit 1; fi
	@touch $(STAMP)

demo: install
	$(VENV)/bin/medseg demo

test: install system-deps
	$(VENV)/bin/pytest -q --durations=15

lint: install
	$(VENV)/bin/ruff check src tests bench

bench: install
	$(PY) bench/isic_default_vs_tutorial.py

clean:
	rm -rf $(VENV) runs .pytest_cache
