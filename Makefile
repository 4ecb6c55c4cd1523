# The two set-up commands of the README, and the steps they share.
#   make demo  — trace the bundled sample with the shipped model in a user's Blender (a Python holding only
#                the bpy module, the extension installed from its zip): out/world_tracing_demo.blend + renders
#   make test  — the whole test suite (real Blender through the bpy module, real torch)
# and for development: make test-fast (no Blender, nothing slow), make lint (ruff and mypy)

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BLENDER := $(shell sed -n 's/^bpy==//p' requirements.txt)
USER_BLENDER := .venv-blender/$(BLENDER)

.PHONY: demo test test-fast lint extension

$(VENV)/installed: requirements.txt wheels/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# A user's Blender: bpy and what it depends on, nothing else (the tests make the same one).
$(USER_BLENDER)/installed: requirements.txt
	$(PYTHON) -m venv --clear $(USER_BLENDER)
	$(USER_BLENDER)/bin/python -m pip install --quiet --disable-pip-version-check bpy==$(BLENDER)
	touch $@

extension: $(USER_BLENDER)/installed
	$(USER_BLENDER)/bin/python wheels/build.py

demo: extension
	$(USER_BLENDER)/bin/python -I scripts/demo.py

test: $(VENV)/installed
	$(PY) -m pytest

test-fast: $(VENV)/installed
	$(PY) -m pytest -m "not blender and not slow"

lint: $(VENV)/installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
