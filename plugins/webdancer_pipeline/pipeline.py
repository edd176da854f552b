"""`webdancer pipeline`: every stage, in order, on one config; rerun after any crash and it finishes.

Each stage writes append-only JSONL or atomic files and resumes from what is on disk; a stage is
marked done in `runs/<run>/pipeline.json` only when it has finished, and a rerun skips done stages.
Servers (the offline web, the model, the fine-tuned model) are started when a stage needs them
and die with the pipeline, even when it is killed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from webdancer import aio, console
from webdancer.config import WebdancerConfig
from webdancer.errors import ConfigError, WebdancerError
from webdancer.http import is_loopback
from webdancer.jsonl import atomic_write_json, atomic_write_text, following, iter_json_lines, read_records
from webdancer.memory import PeakMemorySampler
from webdancer.records import QAItem
from webdancer.tracking import Reporting, track
from webdancer.typed import to_dict
from webdancer_pipeline.config import EVAL_TITLES, OPTIONAL_STAGES, PIPELINE_STAGES

if TYPE_CHECKING:
    from webdancer_sft.config import SftConfig

DEFAULT_MODEL = "smollm2-135m"
EVALS = tuple(EVAL_TITLES)  # eval/<name>: the base model, after SFT (twice: control), after RL
TRAINING_STAGES = ("sft", "rl")  # they use no served model, and the memory of an idle one is theirs
SCORING_STAGES = ("filter", "eval_before", "eval_after", "eval_control", "rl", "eval_rl")  # they score with the configured rewards
_ALL_ADDRESSES = ("0.0.0.0", "::")  # a server bound here is reached by loopback too


def _serves(url: str, host: str, port: int) -> bool:
    """Whether an OpenAI base URL reaches a server this machine runs on host:port (loopback names are one)."""
    from webdancer_web.guard import host_key

    try:
        url_host, url_port = host_key(url).rsplit(":", 1)
    except ValueError:  # a port that is not a number
        return False
    def this_machine(name: str) -> bool:
        return is_loopback(name) or name in _ALL_ADDRESSES

    same_host = url_host == host.lower() or (this_machine(url_host) and this_machine(host.lower()))
    return same_host and int(url_port) == port


class Pipeline:
    def __init__(self, cfg: WebdancerConfig, echo: Callable[[str], None] = console.echo):
        unknown = [s for s in cfg.pipeline.stages if s not in PIPELINE_STAGES + OPTIONAL_STAGES]
        if unknown:
            raise ConfigError(f"pipeline.stages: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(PIPELINE_STAGES + OPTIONAL_STAGES)}")
        self.cfg = cfg
        self.echo = echo
        self.dir = cfg.run.dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "pipeline.json"
        self.state: dict[str, Any] = json.loads(self.state_file.read_text()) if self.state_file.exists() else {"stages": {}}
        self.services = contextlib.ExitStack()  # the offline web, for the whole run
        self.base_server = contextlib.ExitStack()  # the base model, until a stage no longer needs it
        self.eval_server = contextlib.ExitStack()  # a trained model, while its eval runs
        self._web = self._model = None
        self.judge_on_base = self._check_judge()
        if cfg.serve.backend == "vllm":  # a missing vLLM, a CPU it cannot run on, a KV cache too big: before any stage
            from webdancer_models.vllm_serve import check_vllm_machine

            check_vllm_machine(cfg.serve, model_made_later="model" in cfg.pipeline.stages)
        if "rl" in cfg.pipeline.stages and cfg.rl.engine == "trl" and cfg.rl.trl_rollouts == "vllm":  # the same, for RL's vLLM
            from webdancer_rl.train import trl_vllm_env

            trl_vllm_env(cfg, model_made_later=True)  # the SFT stage makes the model RL starts from

    # --- files ---------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def sft_dir(self) -> Path:
        return Path(self.cfg.sft.output_dir or self.dir / "sft")

    # --- running ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            for stage in self.cfg.pipeline.stages:
                done = self.state["stages"].get(stage)
                if done and stage != "report":
                    self.echo(f"== {stage}: done already ({done['seconds']:.0f} s, {done['finished']})")
                    continue
                self.echo(f"== {stage}")
                if stage in TRAINING_STAGES:
                    self.stop_models(keep_judge=stage in SCORING_STAGES)
                if stage in SCORING_STAGES:
                    self.need_judge()
                t0 = time.perf_counter()
                with PeakMemorySampler() as peak:  # this process and what it started: servers, trainers, workers
                    summary = getattr(self, f"stage_{stage}")() or {}
                self.state["stages"][stage] = {
                    "seconds": round(time.perf_counter() - t0, 1),
                    "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    **peak.as_dict(),
                    "summary": summary,
                }
                atomic_write_json(self.state_file, self.state)
                track(self.cfg, f"pipeline/{stage}", {"seconds": self.state["stages"][stage]["seconds"], "peak_rss_gb": peak.total_gb})
                self.echo(f"   {stage}: {json.dumps(summary, default=str)[:300]}")
        finally:
            self.stop_models()
            self.services.close()
        console.summary(f"pipeline finished in {time.perf_counter() - started:.0f} s; report: {self.path('report.md')}")
        return self.state

    # --- services --------------------------------------------------------------------------
    def need_web(self) -> None:
        if self._web is None:
            import httpx
            from webdancer_models.serve import port_in_use
            from webdancer_web.server import LocalWebServer

            web = self.cfg.web
            if port_in_use(web.host, web.port):  # `webdancer web serve` already runs there: use it
                try:
                    ok = httpx.get(f"{web.base_url}/", timeout=5).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    raise WebdancerError(f"port {web.port} is in use by something that is not the offline web; set web.port")
                self._web = web.base_url
                return
            self._web = self.services.enter_context(LocalWebServer(Path(web.root), web.host, web.port))

    def stop_models(self, keep_judge: bool = False) -> None:
        """Stop the served models: a batched server holds its weights, packed copies and KV cache (~3.5 GB for the
        tiny model) while idle. A later stage that needs the base model starts it again; `keep_judge` keeps it up
        when it is the judge (see `_check_judge`)."""
        self.eval_server.close()
        if not (keep_judge and self.judge_on_base):
            self.base_server.close()
            self._model = None

    def need_model(self) -> None:
        if self.cfg.agent.policy == "openai":
            self._serve_base()

    def _serve_base(self) -> None:
        from webdancer_models.serve import start_server

        if self._model is None:
            self._model = self.base_server.enter_context(start_server(self.cfg.serve, self.path("logs") / "serve_base"))

    def _check_judge(self) -> bool:
        """Whether the judge is the base model this pipeline serves (`judge.model.base_url` at serve.host:serve.port,
        its default): then the base model is served for every stage that scores, RL included. A judge at the port
        the fine-tuned or RL model is served on would find it stopped: refused here, before any stage runs."""
        from webdancer.config import ModelConfig
        from webdancer.options import validate_options

        cfg = self.cfg
        if not cfg.judge.model or cfg.serve.backend == "external":
            return False
        url = validate_options(ModelConfig, cfg.judge.model, "judge.model").base_url
        for port, stage in ((cfg.pipeline.sft_port, "eval_after"), (cfg.pipeline.sft_port, "eval_control"), (cfg.pipeline.rl_port, "eval_rl")):
            if stage in cfg.pipeline.stages and _serves(url, cfg.serve.host, port):
                raise ConfigError(f"judge.model.base_url={url} is where the pipeline serves the model {stage} evaluates "
                                  f"(pipeline.{'rl' if stage == 'eval_rl' else 'sft'}_port={port}), which runs only for that "
                                  "stage; point the judge at a server that stays up (the base model's, serve.port, or another)")
        return _serves(url, cfg.serve.host, cfg.serve.port)

    def need_judge(self) -> None:
        if self.judge_on_base:
            self._serve_base()

    @property
    def rl_dir(self) -> Path:
        from webdancer_rl.train import output_dir

        return output_dir(self.cfg)

    def served_config(self, model_dir: Path, port: int) -> WebdancerConfig:
        """The config whose model is `model_dir`, served on `port`."""
        cfg = self.cfg
        serve = replace(cfg.serve, model_path=str(model_dir), port=port)
        model = replace(cfg.model, base_url=f"http://{serve.host}:{serve.port}/v1", model=str(model_dir))
        return replace(cfg, serve=serve, model=model)

    # --- stages ----------------------------------------------------------------------------
    def stage_web(self) -> dict[str, Any]:
        from webdancer_web.build import build_web

        web = self.cfg.web
        manifest = Path(web.root) / "manifest.json"
        if manifest.is_file():
            return {"pages": json.loads(manifest.read_text())["pages"], "built": False}
        stats = build_web(web.sites, Path(web.root), web.base_url, progress=lambda site, n: self.echo(f"   {site}: {n} pages"))
        return {"pages": stats.pages, "built": True, "pages_per_s": round(stats.pages_per_s)}

    def stage_model(self) -> dict[str, Any]:
        from webdancer_models.serve import LOCAL_BACKENDS

        serve = self.cfg.serve
        if serve.backend not in LOCAL_BACKENDS or (Path(serve.model_path) / "config.json").is_file():
            return {"model": serve.model_path, "exported": False}
        from webdancer_models.export import export_model

        export_model(DEFAULT_MODEL, Path(serve.model_path))
        return {"model": serve.model_path, "exported": True}

    def stage_synth(self) -> dict[str, Any]:
        from webdancer.synth import synthesize

        self.need_web()
        crawl = synthesize(self.cfg, "crawlqa", self.path("qa_crawlqa.jsonl"))
        e2h = synthesize(self.cfg, "e2hqa", self.path("qa_e2hqa.jsonl"), str(self.path("qa_crawlqa.jsonl")))
        return {"crawlqa": _count(self.path("qa_crawlqa.jsonl")), "e2hqa": _count(self.path("qa_e2hqa.jsonl")),
                "crawlqa_dropped": crawl["dropped"], "e2hqa_dropped": e2h["dropped"]}

    def stage_split(self) -> dict[str, Any]:
        """Hold CrawlQA questions out of training (and every E2HQA question built on them)."""
        crawl = list(read_records(self.path("qa_crawlqa.jsonl"), QAItem))
        e2h = list(read_records(self.path("qa_e2hqa.jsonl"), QAItem)) if self.path("qa_e2hqa.jsonl").exists() else []
        n = min(self.cfg.pipeline.eval_questions, max(0, len(crawl) - 1))
        held = sorted(crawl, key=lambda it: hashlib.sha256(it.id.encode()).hexdigest())[:n]
        held_ids = {it.id for it in held}
        held_answers = {it.answer for it in held}
        train = [it for it in crawl if it.id not in held_ids] + [it for it in e2h if it.answer not in held_answers]
        atomic_write_text(self.path("qa_eval.jsonl"), "".join(json.dumps(to_dict(it), ensure_ascii=False) + "\n" for it in held))
        atomic_write_text(self.path("qa_train.jsonl"), "".join(json.dumps(to_dict(it), ensure_ascii=False) + "\n" for it in train))
        return {"eval": len(held), "train": len(train)}

    def _sample(self, policy_name: str, items: list[QAItem], out: Path, model=None) -> dict[str, Any]:
        from webdancer.agent import configured_agent
        from webdancer.sampling import check_no_outages, sample

        cfg = self.cfg

        async def sample_all(bar: console.Progress):
            async with configured_agent(cfg, policy_name, model) as agent:
                return await sample(agent, items, cfg.sample.n, out, cfg.agent.concurrency, _shown_on(bar))

        with console.Progress(f"sampling ({policy_name})", len(items) * cfg.sample.n) as bar:
            stats = aio.run(sample_all(bar))
        track(cfg, f"sample/{policy_name}", stats.tracked())
        check_no_outages(stats, out, "the pipeline")  # the stage is not done: a rerun retries them
        return {"new": stats.done, "already_there": stats.already_there, "terminations": dict(stats.terminations),
                **({"tool_store": stats.tool_store} if stats.tool_store else {})}

    def stage_sample(self) -> dict[str, Any]:
        self.need_web()
        train = list(read_records(self.path("qa_train.jsonl"), QAItem))
        out = {"expert": self._sample("expert", train, self.path("trajectories_expert.jsonl"))}
        k = self.cfg.pipeline.model_sample_questions
        if k != 0:
            from webdancer.config import ModelConfig
            from webdancer.options import validate_options

            teacher = self.cfg.pipeline.teacher
            model = validate_options(ModelConfig, teacher, "pipeline.teacher") if teacher else None
            if model is None:
                self.need_model()
            items = train if k < 0 else train[:k]
            out[self.cfg.agent.policy] = self._sample(self.cfg.agent.policy, items, self.path("trajectories_model.jsonl"), model)
        return out

    def stage_filter(self) -> dict[str, Any]:
        from webdancer.filtering import filter_configured, write_report

        summary, kept_text = {}, ""
        for name in ("expert", "model"):
            src = self.path(f"trajectories_{name}.jsonl")
            if not src.exists():
                continue
            out = self.path(f"kept_{name}.jsonl")
            report = aio.run(filter_configured(src, out, self.cfg))
            write_report(report, self.path(f"kept_{name}_report.json"))
            track(self.cfg, f"filter/{name}", report.to_json())
            summary[name] = report.to_json()
            kept_text += out.read_text(encoding="utf-8")
        atomic_write_text(self.path("kept.jsonl"), kept_text)
        summary["kept"] = _count(self.path("kept.jsonl"))
        if not summary["kept"]:
            raise WebdancerError(f"the filter kept no trajectories (see {self.dir}/kept_*_report.json); nothing to fine-tune on")
        return summary

    def _eval(self, cfg: WebdancerConfig, name: str) -> dict[str, Any]:
        from webdancer.evaluation.run import check_complete, run_eval

        with console.Progress(f"evaluating ({name})", _count(self.path("qa_eval.jsonl")) * cfg.eval.k) as bar:
            results = run_eval(cfg, str(self.path("qa_eval.jsonl")), "qa", name, on_update=_shown_on(bar))
        check_complete(results, self.dir / "eval" / name, "the pipeline")  # not done: a rerun runs the missing ones
        o = results["overall"]
        keys = ("pass_at_1", "valid_tool_call_turns", "well_formed_turns", "answered", "mean_turns")
        return {**{k: round(o[k], 3) for k in keys}, "pass_at_1_ci": [round(x, 3) for x in o["pass_at_1_ci"]]}

    def stage_eval_before(self) -> dict[str, Any]:
        self.need_web()
        self.need_model()
        return self._eval(self.cfg, "before")

    def stage_sft(self) -> dict[str, Any]:
        from webdancer_sft.export import export_sft
        from webdancer_sft.train import run_training, training_losses

        self.check_held_out()
        data = Path(self.cfg.sft.dataset_dir or self.dir / "sft_data")
        stats = export_sft(self.path("kept.jsonl"), data)
        out = self.sft_dir
        if (out / "trainer_state.json").exists():
            return {"exported": stats.exported, "trained": False, "losses": training_losses(out)}
        if out.exists():  # a training cut off by a crash: keep it aside, never delete it, and start over
            aside = out.with_name(f"{out.name}.partial-{dt.datetime.now():%Y%m%d-%H%M%S}")
            shutil.move(str(out), aside)
            self.echo(f"   an unfinished training was moved to {aside}")
        log = out / "trainer_log.jsonl"  # LLaMA-Factory's, a row per logged step
        with console.Progress("fine-tuning (steps)", _planned_steps(self.cfg.sft, stats.exported)) as bar, \
                following(log, lambda: _show_step(bar, log), every_s=2.0):
            result = run_training(self.cfg.sft, data, out, echo=lambda line: None, reporting=Reporting.of(self.cfg))
        losses = result["losses"]
        return {"exported": stats.exported, "trained": True, "steps": len(losses), "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None}

    def check_held_out(self) -> None:
        """Before any training step: no held-out question is one SFT or RL trains on (webdancer_pipeline.heldout)."""
        from webdancer_pipeline.heldout import check_held_out

        if self.path("qa_eval.jsonl").is_file():
            check_held_out(self.path("qa_eval.jsonl"), [self.path("qa_train.jsonl"), self.path("kept.jsonl")])

    def _eval_served(self, model_dir: Path, port: int, name: str) -> dict[str, Any]:
        """Serve `model_dir`, evaluate it as `name`, and compare every evaluation of this run so far."""
        from webdancer_models.serve import start_server

        from webdancer.evaluation.report import load_results, plot_results, render_comparison

        self.need_web()
        cfg = self.served_config(model_dir, port)
        if cfg.agent.policy == "openai":
            self.stop_models(keep_judge=True)  # the models evaluated before this one are done with
            self.eval_server.enter_context(start_server(cfg.serve, self.path("logs") / f"serve_{name}"))
        summary = self._eval(cfg, name)
        runs = {n: load_results(self.dir / "eval" / n) for n in EVALS if (self.dir / "eval" / n / "results.json").exists()}
        if len(runs) >= 2:
            atomic_write_text(self.dir / "eval" / "compare.md", render_comparison(runs))
            plot_results(runs, self.dir / "eval" / "compare.png")
        return summary

    def stage_eval_after(self) -> dict[str, Any]:
        return self._eval_served(self.sft_dir, self.cfg.pipeline.sft_port, "after")

    def stage_eval_control(self) -> dict[str, Any]:
        return self._eval_served(self.sft_dir, self.cfg.pipeline.sft_port, "control")

    def stage_rl(self) -> dict[str, Any]:
        from webdancer_rl.metrics import reward_trend
        from webdancer_rl.prepare import prepare
        from webdancer_rl.train import data_dir, gpu_visible, run_rl

        cfg, out_dir = self.cfg, self.rl_dir
        self.check_held_out()
        data = prepare(list(read_records(self.path("qa_train.jsonl"), QAItem)), cfg, data_dir(cfg))
        mode, engine = cfg.pipeline.rl_train, cfg.rl.engine
        train = mode == "always" or (mode == "auto" and (engine == "trl" or gpu_visible()))
        if train and engine == "trl":
            self.need_web()  # the rollouts call the tools

        def progress(line: str) -> None:  # the engine's per-step lines, not its library chatter
            if line.startswith(("step ", "alarm ", "warning", "error", "resuming", "already trained")):
                self.echo(f"   {line}")

        run_rl(cfg, data_dir(cfg), out_dir, echo=progress, dry_run=not train)
        summary = {"engine": engine, "train_rows": data.train_rows, "val_rows": data.val_rows, "trained": train,
                   "command": str(out_dir / "command.sh")}
        if not train:
            summary["why_not_trained"] = "no GPU visible for verl (pipeline.rl_train=auto)" if mode == "auto" else "pipeline.rl_train=never"
        elif (out_dir / "metrics.jsonl").is_file():
            summary.update(reward_trend(out_dir / "metrics.jsonl"))
        return summary

    def stage_eval_rl(self) -> dict[str, Any]:
        model = self.rl_dir / "model"
        if not (model / "config.json").is_file():
            return {"skipped": f"no RL-trained model at {model}"}
        return self._eval_served(model, self.cfg.pipeline.rl_port, "after_rl")

    def stage_report(self) -> dict[str, Any]:
        from webdancer_pipeline.report import write_report

        return write_report(self.dir, self.state, self.sft_dir, self.rl_dir)


def _count(path: Path) -> int:
    return sum(1 for _ in iter_json_lines(path)) if path.exists() else 0


def _shown_on(bar: console.Progress) -> Callable[[Any], None]:
    """A sampler's stats as progress: rollouts finished (written, or set apart by an outage) and how many were correct."""
    def show(stats: Any) -> None:
        bar.update(stats.already_there + stats.done + stats.outages,
                   f"correct {stats.correct}" + (f", outages {stats.outages}" if stats.outages else ""))
    return show


def _show_step(bar: console.Progress, log: Path) -> None:
    rows = [row for _, row in iter_json_lines(log)] if log.is_file() else []
    if rows:
        loss = rows[-1].get("loss")
        bar.update(rows[-1].get("current_steps", 0), f"loss {loss:.3f}" if isinstance(loss, (int, float)) else "", total=rows[-1].get("total_steps"))


def _planned_steps(sft: SftConfig, examples: int) -> int:
    """The optimizer steps LLaMA-Factory will take: max_steps, else epochs x batches (one process on the CPU); its
    log's own `total_steps` corrects this once the first step is logged."""
    if sft.max_steps > 0:
        return int(sft.max_steps)
    per_step = max(1, sft.per_device_train_batch_size * sft.gradient_accumulation_steps)
    return max(1, int(sft.num_train_epochs * -(-examples // per_step)))
