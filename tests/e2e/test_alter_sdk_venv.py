"""Runs test_alter_sdk.py (issue 14: the official Alter SDK against vault-mcp's /sdk/*) in its own venv.

alter-sdk 0.29.0's mcp extra needs mcp<2 and PyJWT>=2.15, which the other suites' pins (install/requirements.txt)
exclude, so tests/e2e/install.sh puts it in $E2E_ALTER_VENV (install/requirements-alter-sdk.txt). From the main
venv this test runs that module there and fails with its output; in the alter venv, run it directly:
    $E2E_ALTER_VENV/bin/python -m pytest tests/e2e/test_alter_sdk.py
"""
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from harness import E2E_HOME, HERE


def test_official_alter_sdk_suite_in_its_venv():
    if importlib.util.find_spec("alter_sdk") is not None:
        pytest.skip("alter_sdk is importable in this venv: test_alter_sdk.py runs here directly")
    py = Path(os.environ.get("E2E_ALTER_VENV", E2E_HOME / "venv-alter")) / "bin" / "python"
    assert py.exists(), f"{py} is missing: run tests/e2e/install.sh"
    p = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "test_alter_sdk.py"],
                       cwd=HERE, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-12000:] + "\n" + p.stderr[-3000:]
