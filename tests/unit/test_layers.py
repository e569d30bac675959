"""The package layers hold on their own: `lint-imports` checks the contracts in
pyproject.toml against the real import graph (see README's map)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    command = str(exe) if exe.exists() else shutil.which("lint-imports")
    assert command, "lint-imports is missing: install the dev extras (import-linter)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [command, "--no-cache", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layer_contracts_are_kept() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_a_contract(tmp_path: Path) -> None:
    """The checker sees the real graph: the layers turned upside down are reported broken
    (api imports contracts, so contracts above api must fail)."""
    config = tmp_path / "upside-down.ini"
    config.write_text(
        "[importlinter]\n"
        "root_packages =\n    contracts\n    api\n\n"
        "[importlinter:contract:upside-down]\n"
        "name = upside down\n"
        "type = layers\n"
        "layers =\n    contracts\n    api\n"
    )
    result = _lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
