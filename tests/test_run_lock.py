"""One writer per run folder, and no child outliving the process that started it.

A pipeline killed with kill -9 during SFT or RL must not leave a trainer writing into its run folder while the rerun
starts a second one on the same checkpoints: the trainer dies with its parent, and until every holder is gone the
run folder refuses a second writer with the holder's PID.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from webdancer.errors import WebdancerError
from webdancer.runs import run_lock

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from webdancer.launch import run_logged
    from webdancer.runs import run_lock

    with run_lock(sys.argv[1], "a test pipeline"):
        # a trainer: started as the stages start theirs, it inherits the lock and writes its PID
        run_logged([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(300)"],
                   Path(sys.argv[1]) / "train.log", {}, echo=lambda line: open(sys.argv[2], "w").write(line))
""")


def wait_for(predicate, seconds=30):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


def test_a_second_writer_is_refused_until_the_killed_run_and_its_trainer_are_gone(tmp_path):
    run, child_pid_file = tmp_path / "runs" / "r", tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), str(child_pid_file)])
    assert wait_for(lambda: child_pid_file.is_file() and child_pid_file.read_text().strip())
    trainer = int(child_pid_file.read_text())
    with pytest.raises(WebdancerError, match=rf"is being written by PID {parent.pid} \(a test pipeline\)"):
        with run_lock(run, "a rerun", wait_s=1):
            pass
    os.kill(parent.pid, signal.SIGKILL)  # as the kernel's OOM killer or kill -9 would
    parent.wait()
    # The trainer got SIGTERM when its parent died (PR_SET_PDEATHSIG), and with it the last holder of the lock.
    assert wait_for(lambda: not psutil.pid_exists(trainer) or psutil.Process(trainer).status() == psutil.STATUS_ZOMBIE, 10)
    with run_lock(run, "a rerun", wait_s=0):
        with run_lock(run, "the same process again"):  # reentrant: a stage inside the pipeline
            assert (run / ".webdancer.lock").read_text().startswith(f"PID {os.getpid()} (a rerun)")
