"""The README's example runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.timeout(120)
def test_readme_example_runs():
    pytest.importorskip("torch")
    block = re.search(r"## Ten lines\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no 'Ten lines' example"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.timeout(120)
def test_readme_streams_example_runs():
    block = re.search(r"## Streams\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no 'Streams' example"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stderr[-3000:]
