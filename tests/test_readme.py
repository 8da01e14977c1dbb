"""The README's Python example runs as written, and its two set-up commands are the ones
.ci/run uses."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    model = scope["model"]
    assert model[3].feedback.shape == (10, 500)  # converted for FA
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    install_and_demo, test_command = blocks[0].strip(), blocks[1].strip()
    assert install_and_demo == "pip install torch==2.13.0 -e . && apical demo"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
