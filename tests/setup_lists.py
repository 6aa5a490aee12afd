"""Constants of setup.py, read from its text (importing setup.py would run setup())."""

import ast
from pathlib import Path

_TREE = ast.parse((Path(__file__).resolve().parent.parent / "setup.py").read_text())
WEB_RUNTIME_FILES = next(
    ast.literal_eval(node.value) for node in _TREE.body if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "WEB_RUNTIME_FILES"
)
