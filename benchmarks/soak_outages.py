"""Soak: `webdancer sample` for ~10 minutes while its model server is SIGKILLed and restarted at random.

The model is the fake OpenAI server in its own process (0.3 s per turn, one tool call then the
answer); a chaos thread kills it every 10-40 s and restarts it 0.5-5 s later. When the command
ends it is rerun until it finishes (a rerun is what a user would do after outages). Figures:
rollouts finished, kills survived, outages recorded, reruns needed, records lost and duplicated
(both must be 0). Not in CI: `python benchmarks/soak_outages.py [--minutes 10]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Row, emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from webdancer_web.build import build_web  # noqa: E402
from webdancer_web.config import SiteConfig  # noqa: E402

from webdancer.testing.model_process import ModelProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEBDANCER = str(Path(sys.executable).with_name("webdancer"))
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Chaos:
    """Kill the model process every 10-40 s and start it again 0.5-5 s later."""

    def __init__(self, model: ModelProcess, rng: random.Random):
        self.model, self.rng = model, rng
        self.kills = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.rng.uniform(10, 40)):
            self.model.kill()
            self.kills += 1
            time.sleep(self.rng.uniform(0.5, 5.0))
            self.model.start()

    def __enter__(self) -> "Chaos":
        self.model.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.model.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    concurrency = 8
    # Two turns of 0.3 s per rollout, `concurrency` at once: about enough questions for the minutes asked.
    questions = int(args.minutes * 60 * concurrency / 0.6)
    with tempfile.TemporaryDirectory() as tmp:
        build_web([SiteConfig("foldoc", "foldoc", "/usr/share/dictd")], Path(tmp) / "web", "http://127.0.0.1:1")  # the search index
        qa = Path(tmp) / "qa.jsonl"
        qa.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Which word is w{i}?", "answer": f"w{i}"}) + "\n" for i in range(questions)))
        port = free_port()
        cmd = [WEBDANCER, "sample", str(qa), f"run.root={tmp}", "run.name=soak", f"model.base_url=http://127.0.0.1:{port}/v1",
               "model.model=m", "model.max_retries=2", "model.backoff_s=0.2", "agent.tools=[search]", f"agent.concurrency={concurrency}",
               f"web.root={tmp}/web", "--n", "1"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
        started = time.monotonic()
        runs = 0
        with Chaos(ModelProcess(port, tool="search", latency_s=0.3), rng) as chaos:
            while True:
                runs += 1
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode == 0:
                    break
                if runs >= 20 or "ended because an endpoint" not in done.stderr + done.stdout:
                    print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
                    raise SystemExit("the sample command failed for another reason than an outage")
            kills = chaos.kills
        elapsed = time.monotonic() - started
        out = Path(tmp) / "soak" / "trajectories_openai.jsonl"
        ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        outages_file = out.with_name("trajectories_openai.outages.jsonl")
        outages = len(outages_file.read_text().splitlines()) if outages_file.exists() else 0
        wrong = sum(1 for line in out.read_text().splitlines() if json.loads(line)["termination"] != "answered")
    lost = questions - len(set(ids))
    dupes = len(ids) - len(set(ids))
    emit([
        Row("soak_outages", f"rollouts finished in {elapsed / 60:.1f} min", len(set(ids)), "rollouts", len(set(ids)) / questions,
            "of planned", "1.0", lost == 0),
        Row("soak_outages", "model server kills survived", kills, "kills", kills / max(1.0, elapsed / 60), "per minute", ">= 1 kill", kills >= 1),
        Row("soak_outages", "outages recorded (rerun)", outages, "rollouts", runs, "commands run", "-", True),
        Row("soak_outages", "records lost + duplicated + not answered", lost + dupes + wrong, "records", 0.0, "-", "0", lost + dupes + wrong == 0),
    ])


if __name__ == "__main__":
    main()
