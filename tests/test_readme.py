"""The README's example runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "pattern",
    [
        r"## Ten lines\n\n```python\n(.*?)```",
        r"## Streams\n.*?```python\n(.*?)```",
        r"\*\*Producers and trainers\.\*\*.*?```python\n(.*?)```",
        r"### Which path a client takes\n.*?```python\n(.*?)```",
    ],
    ids=["ten-lines", "streams", "torch", "paths"],
)
def test_readme_example_runs(pattern):
    """README's short examples run as written (at most 12 lines each)."""
    pytest.importorskip("torch")
    block = re.search(pattern, README.read_text(), re.S)
    assert block, f"README has no example matching {pattern!r}"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stderr[-3000:]
