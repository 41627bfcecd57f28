import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Provider, Vault  # noqa: E402


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.stop()


@pytest.fixture
def vault(provider):
    v = Vault(provider)
    yield v
    v.cleanup()
