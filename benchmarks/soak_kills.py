"""Soak: SOAK_MINUTES (default 20) of killing our long-running commands at random moments, by SIGKILL or SIGTERM,
and running them again, counting what a kill leaves behind. Targets: 0 orphans, 0 records lost, 0 duplicated.

Each round picks one victim at random:
- `webdancer pipeline` (synth, split, sample, filter, eval_before against a fake model on loopback that speaks the
  OpenAI protocol, over the offline web), killed 1-25 s in; every third kill of it, the run is finished by a rerun and
  compared record by record with a run that was never killed (ids lost, ids written twice).
- `webdancer serve` (the batched server on the tiny model) killed while a 1,500-token request is in flight.
- `webdancer sft train` (LLaMA-Factory on the quickstart's SFT data, 4 steps) killed 5-60 s in, then started again:
  the run folder must be free for a rerun 10 s after the kill (no child of the dead run still holds its lock).
An orphan is a process the victim started (seen in its process tree up to the kill) still alive 10 s after the kill.

Needs what scripts/quickstart.sh leaves (the exported model, the built web, runs/quickstart/sft_data). Not for CI:
it loads both cores for its whole duration. Run it alone.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
from _common import BASE_MODEL, OFFLINE, QUICKSTART_RUN, ROOT, WEB_ROOT, Row, emit, need_quickstart

WEBDANCER = str(Path(sys.executable).with_name("webdancer"))
STAGES = "[synth,split,sample,filter,eval_before]"
RECORDS = ["qa_crawlqa.jsonl", "qa_e2hqa.jsonl", "qa_eval.jsonl", "qa_train.jsonl", "trajectories_expert.jsonl", "kept.jsonl",
           "eval/before/trajectories.jsonl", "eval/before/scores.jsonl"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def web_args() -> list[str]:
    manifest = json.loads((WEB_ROOT / "manifest.json").read_text())
    port = int(manifest["base_url"].rsplit(":", 1)[1])
    return [f"web.root={WEB_ROOT}", f"web.port={port}"], manifest["base_url"]


def pipeline_command(root: Path, model_url: str) -> list[str]:
    web, base = web_args()
    return [WEBDANCER, "pipeline", f"run.root={root}", "run.name=p", *web, f"model.base_url={model_url}", "model.model=m",
            "model.max_retries=1", "serve.backend=external", f"serve.external_url={model_url}", f"pipeline.stages={STAGES}",
            "pipeline.eval_questions=4", "agent.max_turns=3", "agent.concurrency=2", "tools.visit.cache_dir=null",
            f"synth.crawlqa.root_url={base}/foldoc/python.html", "synth.crawlqa.max_pages=60", "synth.crawlqa.num_items=12",
            "synth.e2hqa.rounds=1", "synth.e2hqa.limit=6", "agent.current_date=2026-12-07", "tracking.backend=none"]


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def records(run_dir: Path) -> dict[str, Counter]:
    return {name: Counter(ids(run_dir / name)) for name in RECORDS}


class Tree:
    """A victim's process tree, sampled until it is killed: every process it started, however deep."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self._stop = proc, {proc.pid}, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.update(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))
            except psutil.Error:
                pass
            time.sleep(0.2)

    def kill(self, sig: int) -> list[int]:
        """Send `sig` to the victim alone (as the OOM killer or a user's kill would), wait for it, and return the pids of
        its tree still alive 10 s later."""
        self._stop.set()
        self._thread.join()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(10)
        alive = [pid for pid in self.seen - {self.proc.pid} if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        for pid in alive:  # leave the machine clean for the next round
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        return alive


def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=OFFLINE, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    need_quickstart(BASE_MODEL / "config.json", WEB_ROOT / "manifest.json", QUICKSTART_RUN / "sft_data" / "dataset_info.json")
    minutes = float(os.environ.get("SOAK_MINUTES", "20"))
    rng = random.Random(int(os.environ.get("SOAK_SEED", "7")))
    counts: Counter = Counter()
    orphans: list[tuple[str, str, int]] = []
    lost = duplicated = refused = 0
    from webdancer_web.server import LocalWebServer

    web, _ = web_args()
    port = int(web[1].split("=")[1])
    from webdancer.testing.fake_openai import FakeOpenAIServer

    with tempfile.TemporaryDirectory() as tmp, LocalWebServer(WEB_ROOT, "127.0.0.1", port), FakeOpenAIServer(default=student, latency_s=0.05) as srv:
        tmp_path, model_url = Path(tmp), srv.base_url
        log = tmp_path / "soak.log"
        clean = subprocess.run(pipeline_command(tmp_path / "clean", model_url), cwd=ROOT, env=OFFLINE, capture_output=True, text=True)
        if clean.returncode != 0:
            sys.exit(f"the clean pipeline run failed: {clean.stdout[-2000:]}\n{clean.stderr[-2000:]}")
        expected = records(tmp_path / "clean" / "p")
        deadline = time.monotonic() + 60 * minutes
        pipeline_kills = 0
        while time.monotonic() < deadline:
            victim = rng.choice(["pipeline", "serve", "sft"])
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            counts[(victim, sig.name)] += 1
            if victim == "pipeline":
                root = tmp_path / "killed"
                tree = Tree(start(pipeline_command(root, model_url), log))
                time.sleep(rng.uniform(1, 25))
                orphans += [(victim, sig.name, pid) for pid in tree.kill(sig)]
                refused += not lock_is_free(root / "p")
                pipeline_kills += 1
                if pipeline_kills % 3 == 0:  # finish the run and compare it with the clean one
                    subprocess.run(pipeline_command(root, model_url), cwd=ROOT, env=OFFLINE, capture_output=True, text=True)
                    got = records(root / "p")
                    for name in RECORDS:
                        lost += len(set(expected[name]) - set(got[name]))
                        duplicated += sum(n - 1 for n in got[name].values() if n > 1)
                    shutil.rmtree(root)
            elif victim == "serve":
                port = free_port()
                tree = Tree(start([WEBDANCER, "serve", f"serve.model_path={BASE_MODEL}", f"serve.port={port}", "serve.kv_cache_tokens=4096",
                                   f"run.root={tmp_path / 'serve'}"], log))
                base = f"http://127.0.0.1:{port}"
                ready = time.monotonic() + 120
                while time.monotonic() < ready:
                    try:
                        if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.5)
                body = {"messages": [{"role": "user", "content": "Tell a very long story about ships."}], "max_tokens": 1500, "temperature": 0}
                threading.Thread(target=_quiet_post, args=(f"{base}/v1/chat/completions", body), daemon=True).start()
                time.sleep(rng.uniform(1, 5))
                orphans += [(victim, sig.name, pid) for pid in tree.kill(sig)]
            else:
                run_root = tmp_path / "sft"
                command = [WEBDANCER, "sft", "train", f"run.root={run_root}", "run.name=s", f"sft.dataset_dir={QUICKSTART_RUN / 'sft_data'}",
                           f"sft.model_path={BASE_MODEL}", "sft.max_steps=4", "sft.save_steps=2", "sft.cutoff_len=1024", "tracking.backend=none"]
                tree = Tree(start(command, log))
                time.sleep(rng.uniform(5, 60))
                orphans += [(victim, sig.name, pid) for pid in tree.kill(sig)]
                refused += not lock_is_free(run_root / "s")
                shutil.rmtree(run_root, ignore_errors=True)
    rounds = sum(counts.values())
    rows = [
        Row("soak_kills", "rounds (victim killed and rerun)", rounds, "rounds", rounds / max(minutes, 1e-9), "rounds a minute", "report", True),
        Row("soak_kills", "orphans left 10 s after a kill", len(orphans), "processes", len(orphans) / max(rounds, 1), "a round", "0", not orphans),
        Row("soak_kills", "records lost after reruns", lost, "records", lost, "-", "0", lost == 0),
        Row("soak_kills", "records written twice after reruns", duplicated, "records", duplicated, "-", "0", duplicated == 0),
        Row("soak_kills", "run folders still locked 10 s after a kill", refused, "folders", refused, "-", "0", refused == 0),
    ]
    emit(rows)
    print("rounds:", dict(sorted((f"{v} {s}", n) for (v, s), n in counts.items())))
    for victim, sig, pid in orphans:
        print(f"orphan after {sig} of {victim}: pid {pid}")


def student(request: dict) -> str:
    """The fake model: searches once, then answers with a word it was shown (what tests/test_pipeline.py uses)."""
    from webdancer.records import ToolCall
    from webdancer.wire import render_assistant

    messages = request["messages"]
    if not any(m["role"] == "assistant" for m in messages):
        return render_assistant("Search first.", tool_call=ToolCall("search", {"query": [messages[-1]["content"][-80:]]}))
    return render_assistant("Answering from the results.", answer="Python")


def lock_is_free(run_dir: Path) -> bool:
    """Whether a rerun would get the run folder now (the killed run and every child holding its lock are gone)."""
    from webdancer.errors import WebdancerError
    from webdancer.runs import run_lock

    try:
        with run_lock(run_dir, "the soak's check", wait_s=0):
            return True
    except WebdancerError:
        return False


def _quiet_post(url: str, body: dict) -> None:
    try:
        httpx.post(url, json=body, timeout=120)
    except httpx.HTTPError:
        pass


if __name__ == "__main__":
    main()
