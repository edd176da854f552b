"""webdancer.memory: the peak of a process tree, children included, read while they run."""

import json
import subprocess
import sys

import psutil

from webdancer.memory import release_freed_memory

# Run in a process of its own: the test runner's tree holds other tests' servers, which would be the largest process.
SAMPLED = """
import json, subprocess, sys, time
from webdancer.memory import PeakMemorySampler
script = "import time; block = b'x' * (400 * 2**20); print('ready', flush=True); time.sleep(30)"
with PeakMemorySampler(interval_s=0.1) as peak:
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.4)
    finally:
        child.kill()
        child.wait()
print(json.dumps(peak.as_dict()))
"""


def test_a_childs_memory_counts_while_it_runs_and_the_largest_process_is_named():
    done = subprocess.run([sys.executable, "-c", SAMPLED], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    peak = json.loads(done.stdout.splitlines()[-1])
    assert 0.39 < peak["peak_process_rss_gb"] < 0.6
    assert peak["peak_process"].startswith("python")  # `python -c`: no module or script to name it by
    assert peak["peak_rss_gb"] >= peak["peak_process_rss_gb"] + 0.01  # the child and the sampling process at one moment


def test_freed_memory_goes_back_to_the_system():
    """Mid-sized blocks freed between blocks still in use stay in the heap (glibc keeps them for reuse) until trimmed:
    the retention that grew the RL trainer by a step's generation engine."""
    import gc

    rss = lambda: psutil.Process().memory_info().rss / 2**20  # noqa: E731
    release_freed_memory()
    before = rss()
    blocks = [bytearray(b"x" * 100_000) for _ in range(3000)]  # ~300 MB under the mmap threshold: heap pages
    grown = rss() - before
    kept = blocks[::20]  # every 20th stays in use, so the heap's top cannot shrink by itself
    del blocks
    gc.collect()
    held = rss() - before
    release_freed_memory()
    assert grown > 250 and held > 0.8 * grown and rss() - before < 0.25 * grown and len(kept) == 150
