# Two commands for a fresh Linux machine: `make run` and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install test-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, from the pinned local wheels; see README "Installing".
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gmi-desktop open

# The integration tests check what they write with the real validators (Debian packages); as root
# with apt they are installed here, elsewhere those checks skip and say how to install them.
test-tools:
	@if ! command -v desktop-file-validate >/dev/null || ! command -v appstreamcli >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq desktop-file-utils appstream) >/dev/null 2>&1 \
	      || echo "note: could not install desktop-file-utils/appstream; their validation tests will skip"; \
	  else echo "note: desktop-file-validate/appstreamcli missing (apt-get install desktop-file-utils appstream); their validation tests will skip"; fi; \
	fi

test: $(STAMP) test-tools
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist *.egg-info
