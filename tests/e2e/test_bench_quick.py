"""Quick passes of the long benchmark scripts, so they keep working between the runs that measure:
`scripts/bench-load.py` (wrk against nginx directly and through one vault instance, audit on and
verified) for one second per target, `scripts/bench-coldstart.py` for a few starts, and
`scripts/bench-stdio.py` (the official Python client over stdio) for a few calls. These check
that the scripts run, the vault answers every call and the audit trail holds every answered call —
not speed: the figures are reported by the long runs (docs/performance.md)."""
import re
import subprocess
import sys

import pytest

from harness import REPO

RELEASE = REPO / "target/release/vault-mcp"


@pytest.fixture(autouse=True)
def _release_binary():
    if not RELEASE.exists():
        pytest.fail("target/release/vault-mcp is missing: scripts/test.sh builds it before the end-to-end tests")


def test_load_script_quick_pass(tmp_path):
    md = tmp_path / "load.md"
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts/bench-load.py"), "--targets", "direct,sqlite1", "--no-lb",
         "--seconds", "1", "--connections", "8", "--bin", str(RELEASE), "--markdown", str(md)],
        capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {}
    for line in md.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[0] in ("direct", "sqlite1"):
            rows[cells[0]] = cells
    assert set(rows) == {"direct", "sqlite1"}, md.read_text()
    calls = float(rows["sqlite1"][3])
    assert calls > 0, rows
    assert rows["sqlite1"][6] == "0", f"errors under load: {rows}"
    # Every answered call (and the warm-up's) has its audit row, verified by the script.
    assert int(rows["sqlite1"][8]) >= calls, rows
    assert re.fullmatch(r"1/\d+(\.\d)?", rows["sqlite1"][7]), rows


def test_coldstart_script_quick_pass():
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts/bench-coldstart.py"), "--bin", str(RELEASE), "--runs", "3"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"cold start to initialize result: median ([\d.]+) ms", r.stdout)
    assert m and float(m.group(1)) > 0, r.stdout
    assert "ratio (median)" in r.stdout, r.stdout


def test_stdio_script_quick_pass():
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts/bench-stdio.py"), "--bin", str(RELEASE), "--calls", "30"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    medians = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(ping|direct|vault_request)\s+([\d.]+)", r.stdout, re.M)}
    assert set(medians) == {"ping", "direct", "vault_request"} and all(v > 0 for v in medians.values()), r.stdout
    assert re.search(r"vault-mcp adds \(p50\): -?[\d.]+ ms", r.stdout), r.stdout
