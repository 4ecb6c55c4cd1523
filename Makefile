# The two set-up commands of the README, and the steps they share.
#   make demo  — trace the bundled sample with the shipped model in Blender: out/world_tracing_demo.blend + renders
#   make test  — the whole test suite (real Blender through the bpy module, real torch)

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test extension

$(VENV)/installed: requirements.txt wheels/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

extension: $(VENV)/installed
	$(PY) wheels/build.py

demo: extension
	$(PY) scripts/demo.py

test: $(VENV)/installed
	$(PY) -m pytest
