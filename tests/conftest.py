import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def plugins():
    """A fresh registry (entry points + the test tools), installed as the process-wide one."""
    import toolkit

    from webdancer.plugins import Plugins, set_plugins

    reg = Plugins()
    reg.register(toolkit, name="test-toolkit")
    set_plugins(reg)
    yield reg
    set_plugins(None)


@pytest.fixture
def reference_dir():
    if not (REFERENCE / "sample_traj.jsonl").exists():
        pytest.skip("../shared/reference is not beside this checkout")
    return REFERENCE
