"""The Python example of README.md runs, against a corpus image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import SOURCE_DIR


def readme_python_block() -> str:
    text = Path(os.environ.get("VHDX_README") or SOURCE_DIR / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "README's Python section should hold one python block"
    return blocks[0]


def test_readme_example(tmp_path, corpus):
    name = "fixed.vhdx.gz"
    shutil.copy(corpus.path(name), tmp_path / "disk.vhdx")
    out = subprocess.run([sys.executable, "-c", readme_python_block()], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "fixed 10485760"
    assert f"sha256 {corpus.sha256(name)}" in lines
    assert "data at 0x0: 10485760 bytes, file offset 0x400000" in lines
    assert lines[-2] == "0" and lines[-1].startswith("error: ")
    assert os.path.getsize(tmp_path / "new.raw") == 1 << 30
