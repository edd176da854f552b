"""`webdancer pipeline`: the stages end to end, a report, and kill -9 at random points without loss or duplicates.

The model is a loopback fake speaking the OpenAI protocol (the tiny model and LLaMA-Factory are
exercised by their own tests; here they would only make the kill loop slow), the web is real.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT

from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.wire import render_assistant

STAGES = "[web,model,synth,split,sample,filter,eval_before,rl,report]"
WEBDANCER = str(Path(sys.executable).with_name("webdancer"))


def student(request):
    """A model that searches once, then answers with the first capitalized word it was shown."""
    messages = request["messages"]
    if not any(m["role"] == "assistant" for m in messages):
        return render_assistant("Search first.", tool_call=ToolCall("search", {"query": [messages[-1]["content"][-80:]]}))
    return render_assistant("Answering from the results.", answer="Python")


def pipeline_args(local_web, srv, root):
    web, _, _ = local_web
    return [WEBDANCER, "pipeline", f"run.root={root}", "run.name=p", f"web.root={web.root}", f"web.port={web.port}",
            "serve.backend=external", f"serve.external_url={srv.base_url}", f"model.base_url={srv.base_url}", "model.model=m",
            "model.max_retries=1", f"pipeline.stages={STAGES}", "pipeline.eval_questions=3", "pipeline.model_sample_questions=2",
            "agent.max_turns=3", "agent.concurrency=2", "tools.visit.cache_dir=null", "tools.visit.max_tokens=200",
            f"synth.crawlqa.root_url={web.base_url}/foldoc/python.html", "synth.crawlqa.max_pages=60", "synth.crawlqa.num_items=12",
            "synth.e2hqa.rounds=1", "synth.e2hqa.limit=6", "agent.current_date=2026-11-24"]


CANARY = "sk-canary-3f9c2e7d1b"  # every key variable holds it; no file of a run may
KEY_VARS = ("WEBDANCER_TEST_MODEL_KEY", "OPENAI_API_KEY", "SERPER_API_KEY", "GOOGLE_SEARCH_KEY", "JINA_API_KEY",
            "DASHSCOPE_API_KEY", "HF_TOKEN", "WANDB_API_KEY")


def run(args, timeout=600, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def outcome(run_dir):
    """What a finished run holds, by id: the same whether or not it was killed on the way."""
    files = ["qa_crawlqa.jsonl", "qa_e2hqa.jsonl", "qa_eval.jsonl", "qa_train.jsonl", "trajectories_expert.jsonl",
             "trajectories_model.jsonl", "kept.jsonl", "eval/before/trajectories.jsonl", "eval/before/scores.jsonl"]
    out = {}
    for name in files:
        found = ids(run_dir / name)
        dupes = [k for k, n in Counter(found).items() if n > 1]
        assert not dupes, f"{name} has duplicate ids after a resume: {dupes[:3]}"
        out[name] = sorted(found)
    return out


def test_pipeline_runs_every_stage_and_writes_a_report_and_no_secret_lands(local_web, tmp_path):
    secrets = {var: CANARY for var in KEY_VARS}
    with FakeOpenAIServer(default=student) as srv:
        args = [*pipeline_args(local_web, srv, tmp_path), "model.api_key_env=WEBDANCER_TEST_MODEL_KEY"]
        result = run(args, env_extra=secrets)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        again = run(args, env_extra=secrets)
        sent = [h.get("Authorization") for h in srv.state.headers]
    assert again.returncode == 0 and again.stdout.count("done already") == 8  # every stage but the report is skipped
    for output in (result.stdout + result.stderr, again.stdout + again.stderr):  # a log file a person reads
        lines = [line for line in output.splitlines() if line.strip()]
        assert "\x1b[" not in output and not [line for line, n in Counter(lines).items() if n > 1], output
        assert "Trackio" not in output and output.rstrip().endswith(f"report: {tmp_path / 'p' / 'report.md'}")
    run_dir = tmp_path / "p"
    assert sent and all(h == f"Bearer {CANARY}" for h in sent)  # the key was in use ...
    leaked = [str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file() and CANARY.encode() in f.read_bytes()]
    assert leaked == [] and CANARY not in result.stdout + result.stderr + again.stdout + again.stderr  # ... and written nowhere
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert list(state["stages"]) == STAGES.strip("[]").split(",")
    assert state["stages"]["split"]["summary"]["eval"] == 3 and state["stages"]["filter"]["summary"]["kept"] > 0
    assert state["stages"]["rl"]["summary"]["trained"] is False and (run_dir / "rl" / "command.sh").is_file()
    report = (run_dir / "report.md").read_text()
    for part in ("## Counts", "| CrawlQA questions | 12 |", "## Why trajectories were dropped", "## Evaluation (before)", "## Timings and memory", "## RL"):
        assert part in report
    for name, stage in state["stages"].items():  # the pipeline process alone holds its interpreter and the config
        assert stage["peak_rss_gb"] >= stage["peak_process_rss_gb"] > 0.02 and stage["peak_process"], (name, stage)
    html = (run_dir / "report.html").read_text()
    assert "<table>" in html and "<h2>Timings and memory</h2>" in html
    assert (run_dir / "eval" / "before" / "plot.png").stat().st_size > 1000


def test_kill_9_at_random_points_then_rerun_loses_and_duplicates_nothing(local_web, tmp_path):
    seed = int(os.environ.get("WEBDANCER_KILL_SEED", time.time()))
    rng = random.Random(seed)
    with FakeOpenAIServer(default=student, latency_s=0.05) as srv:
        t0 = time.monotonic()
        clean = run(pipeline_args(local_web, srv, tmp_path / "clean"))
        wall = time.monotonic() - t0
        assert clean.returncode == 0, clean.stdout[-3000:]
        kills = []
        for _ in range(3):
            proc = subprocess.Popen(pipeline_args(local_web, srv, tmp_path / "killed"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            delay = rng.uniform(0.5, wall * 0.9)
            time.sleep(delay)
            alive = proc.poll() is None
            if alive:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((round(delay, 1), alive))
        final = run(pipeline_args(local_web, srv, tmp_path / "killed"))
    assert any(alive for _, alive in kills), f"seed {seed}: no kill landed while the pipeline ran {kills}"
    assert final.returncode == 0, f"seed {seed}, kills {kills}: " + final.stdout[-3000:] + final.stderr[-2000:]
    assert outcome(tmp_path / "killed" / "p") == outcome(tmp_path / "clean" / "p"), f"seed {seed}, kills {kills}"


def watched_pipeline(monkeypatch, external_url=None):
    """A Pipeline whose stages only record which models are up while they run (their work is tested elsewhere), over
    the real start_server wrapped to record what it serves; with `external_url`, every model is the fake there, as an
    external backend, whatever the config's serve.backend. Returns (the class, models started in order, models up
    now, what each stage saw)."""
    import contextlib
    from dataclasses import replace

    import webdancer_models.serve as serve
    from webdancer_pipeline.pipeline import Pipeline

    real, live, started, seen = serve.start_server, set(), [], {}

    @contextlib.contextmanager
    def watched(cfg, log_dir):
        with real(replace(cfg, backend="external", external_url=external_url) if external_url else cfg, log_dir) as server:
            started.append(cfg.model_path)
            live.add(cfg.model_path)
            try:
                yield server
            finally:
                live.discard(cfg.model_path)

    monkeypatch.setattr(serve, "start_server", watched)

    class Watched(Pipeline):
        def _eval(self, cfg, name):
            seen[name] = sorted(live)
            return {}

        def stage_filter(self):
            seen["filter"] = sorted(live)

        def stage_sft(self):
            seen["sft"] = sorted(live)

        def stage_rl(self):
            seen["rl"] = sorted(live)
            (self.rl_dir / "model").mkdir(parents=True)
            (self.rl_dir / "model" / "config.json").write_text("{}")

    return Watched, started, live, seen


def test_served_models_stop_before_training_and_before_the_next_model_is_served(local_web, tmp_path, monkeypatch):
    """An idle batched server keeps its weights, packed copies and KV cache (~3.5 GB for the tiny model): the
    pipeline stops the served models before SFT and RL and before it serves the next model to evaluate. The real
    start_server runs (serve.backend=external, the fake model); a wrapper only records which servers are up."""
    from webdancer.config_loader import load_config

    Watched, started, live, seen = watched_pipeline(monkeypatch)
    web, _, _ = local_web
    with FakeOpenAIServer(default=student) as srv:
        cfg = load_config(None, [f"run.root={tmp_path}", "run.name=p", f"web.root={web.root}", f"web.port={web.port}",
                                 "serve.backend=external", f"serve.external_url={srv.base_url}",
                                 "pipeline.stages=[eval_before,sft,eval_after,rl,eval_rl]"])
        pipeline = Watched(cfg, echo=lambda line: None)
        pipeline.run()
    base, sft, rl = cfg.serve.model_path, str(pipeline.sft_dir), str(pipeline.rl_dir / "model")
    assert started == [base, sft, rl] and not live
    assert seen == {"before": [base], "sft": [], "after": [sft], "rl": [], "after_rl": [rl]}


def test_a_judge_on_the_base_model_keeps_it_served_for_every_stage_that_scores(local_web, tmp_path, monkeypatch):
    """`judge.model.base_url` at serve.host:serve.port (its default) is the base model this pipeline serves: it
    stays up while filter, the evals and RL score, and is stopped only for SFT. The real start_server runs, on the
    fake model as an external backend; the pipeline itself is configured to serve a batched model."""
    import pytest
    from webdancer_pipeline.pipeline import Pipeline

    from webdancer.config_loader import load_config
    from webdancer.errors import ConfigError

    web, _, _ = local_web
    with FakeOpenAIServer(default=student) as srv:
        Watched, started, live, seen = watched_pipeline(monkeypatch, external_url=srv.base_url)

        def config(judge_url, stages="[filter,eval_before,sft,eval_after,rl,eval_rl]"):
            return load_config(None, [f"run.root={tmp_path}", "run.name=p", f"web.root={web.root}", f"web.port={web.port}",
                                      "serve.backend=batched", "serve.port=8000", f"pipeline.stages={stages}",
                                      f"judge.model={{base_url: '{judge_url}', model: m}}"])

        cfg = config("http://localhost:8000/v1")
        pipeline = Watched(cfg, echo=lambda line: None)
        assert pipeline.judge_on_base
        pipeline.run()
        base, sft, rl = cfg.serve.model_path, str(pipeline.sft_dir), str(pipeline.rl_dir / "model")
        assert not live
        assert started == [base, base, sft, rl]  # once for the filter, again after SFT
        assert seen == {"filter": [base], "before": [base], "sft": [], "after": sorted([base, sft]), "rl": [base],
                        "after_rl": sorted([base, rl])}

        assert not Pipeline(config("http://10.1.2.3:8000/v1"), echo=lambda line: None).judge_on_base  # another machine
        with pytest.raises(ConfigError, match=r"judge.model.base_url=http://127.0.0.1:8001/v1 .*eval_after.*sft_port=8001"):
            Pipeline(config("http://127.0.0.1:8001/v1"), echo=lambda line: None)
        Pipeline(config("http://127.0.0.1:8001/v1", "[eval_before,rl]"), echo=lambda line: None)  # nothing served there


def test_held_out_questions_that_training_sees_are_refused_before_any_step(tmp_path):
    """The same question under another id (two pages, one fact) counts: the refusal names the ids."""
    run_dir = tmp_path / "p"
    run_dir.mkdir()
    held = [{"id": "q-held-1", "question": "Who wrote the Python tutorial?", "answer": "Guido"},
            {"id": "q-held-2", "question": "What is FOLDOC?", "answer": "a dictionary"}]
    train = [{"id": "q-train-9", "question": "who wrote the  python tutorial", "answer": "Guido"},
             {"id": "q-train-8", "question": "What is Jython?", "answer": "Python on the JVM"}]
    (run_dir / "qa_eval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in held))
    (run_dir / "qa_train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in train))
    for stage in ("rl", "sft"):
        proc = run([WEBDANCER, "pipeline", f"run.root={tmp_path}", "run.name=p", f"pipeline.stages=[{stage}]"], timeout=120)
        assert proc.returncode != 0
        assert "1 held-out question(s)" in proc.stderr + proc.stdout and "q-held-1" in proc.stderr + proc.stdout, proc.stderr[-2000:]
        assert "q-held-2" not in proc.stderr + proc.stdout
    assert not (run_dir / "rl_data").exists() and not (run_dir / "sft").exists()  # refused before anything was written
    # Trajectories SFT trains on count too (their ids are <question id>:<n>).
    from webdancer_pipeline.heldout import check_held_out

    (run_dir / "qa_train.jsonl").write_text(json.dumps(train[1]) + "\n")
    (run_dir / "kept.jsonl").write_text(json.dumps({"id": "q-held-2:0", "question": "Something else entirely?"}) + "\n")
    with pytest.raises(Exception, match=r"held-out question\(s\) of .*qa_eval.jsonl are also in .*kept.jsonl .*: q-held-2\."):
        check_held_out(run_dir / "qa_eval.jsonl", [run_dir / "qa_train.jsonl", run_dir / "kept.jsonl"])


def test_the_report_of_a_seed_run_reads_sft_from_its_log_and_lists_rl_alarms(tmp_path):
    """A seed run (scripts/rl_experiment.sh) shares another run's SFT without its stage summary; its RL had alarms."""
    from webdancer_pipeline.report import write_report

    run_dir, sft, rl = tmp_path / "exp-seed2", tmp_path / "exp-seed2" / "sft", tmp_path / "exp-seed2" / "rl"
    sft.mkdir(parents=True)
    rl.mkdir()
    (sft / "trainer_log.jsonl").write_text("".join(json.dumps({"current_steps": s, "loss": 2.0 / s}) + "\n" for s in (1, 2)))
    rows = [{"step": s, "reward/mean": 0.3, "alarms": ["tool_calls"] if s > 3 else []} for s in range(1, 6)]
    (rl / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = {"stages": {"rl": {"seconds": 1.0, "finished": "now", "summary": {
        "engine": "trl", "train_rows": 4, "val_rows": 1, "trained": True, "command": "c.sh", "steps": 5}}}}
    text = Path(write_report(run_dir, state, sft, rl)["report"]).read_text()
    assert "Loss 2.000 -> 1.000" in text
    assert "Training-health alarms: **tool_calls** (from step 4, held at 2 steps)" in text
