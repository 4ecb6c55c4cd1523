"""Training and evaluation, run from the repository (`python -m core train|eval`), never inside Blender:
the flow-matching loss, the training loop, held-out metrics and the evaluation tables and figures."""
