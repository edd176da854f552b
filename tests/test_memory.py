"""webdancer.memory: the peak of a process tree, children included, read while they run."""

import subprocess
import sys
import time

import psutil

from webdancer.memory import PeakMemorySampler, release_freed_memory


def test_a_childs_memory_counts_while_it_runs_and_the_largest_process_is_named():
    own_gb = psutil.Process().memory_info().rss / 2**30
    child_mb = int((own_gb + 0.3) * 1024)  # larger than this test's own process, whatever the suite loaded before
    script = f"import sys, time; block = b'x' * ({child_mb} * 2**20); print('ready', flush=True); time.sleep(30)"
    with PeakMemorySampler(interval_s=0.1) as peak:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.4)
        finally:
            child.kill()
            child.wait()
    assert child_mb / 1024 - 0.01 < peak.process_gb < child_mb / 1024 + 0.2
    assert peak.process.startswith("python")  # `python -c`: no module or script to name it by
    assert peak.total_gb >= peak.process_gb + own_gb - 0.05  # the child and this process at the same moment
    assert peak.as_dict()["peak_rss_gb"] == round(peak.total_gb, 2)


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
