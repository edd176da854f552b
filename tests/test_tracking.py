"""Experiment tracking with one setting: eval numbers and a real SFT run's losses land in one trackio run,
read back with trackio's own reader; a backend that is not installed is named before anything runs."""

import json

import pytest
from click.testing import CliRunner
from test_eval import eval_args, scripted_model

from webdancer.cli import cli
from webdancer.config_loader import load_config
from webdancer.errors import ConfigError
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tracking import Reporting


def trackio_logs(run_name):
    from trackio.sqlite_storage import SQLiteStorage

    return SQLiteStorage.get_logs("webdancer", run_name)


def test_an_eval_run_logs_its_scores_to_the_run(plugins, tmp_path):
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        args = eval_args(tmp_path, srv, "--name", "before")
        args[args.index("run.name=t")] = "run.name=tracked-eval"
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    [row] = [r for r in trackio_logs("tracked-eval") if "eval/before/pass_at_1" in r]
    results = json.loads((tmp_path / "tracked-eval" / "eval" / "before" / "results.json").read_text())
    assert row["eval/before/pass_at_1"] == pytest.approx(results["overall"]["pass_at_1"]) and row["eval/before/questions"] == 3
    assert row["eval/before/complete"] == 1.0 and "eval/before/pass_at_1_ci_low" in row


def test_a_real_sft_run_feeds_its_losses_to_the_same_run(cpu_sft_run):
    """The real LLaMA-Factory run of conftest.cpu_sft_run reported to trackio run `tracked-sft`, step by step, once."""
    cfg, result = cpu_sft_run["cfg"], cpu_sft_run["result"]
    rows = [r for r in trackio_logs("tracked-sft") if "sft/loss" in r]
    assert [(r["step"], r["sft/loss"]) for r in rows] == [(i + 1, pytest.approx(loss)) for i, loss in enumerate(result["losses"])]
    assert Reporting.of(cfg).relay("sft", cpu_sft_run["out"] / "trainer_log.jsonl", step_key="current_steps") == 0  # not twice


def test_a_trainers_log_reaches_the_run_while_it_trains_not_only_at_the_end(tmp_path):
    import time

    cfg = load_config(None, [f"run.root={tmp_path}", "run.name=tracked-live"])
    log_file = tmp_path / "metrics.jsonl"

    def relayed():
        return [(r["step"], r["rl/reward"]) for r in trackio_logs("tracked-live") if "rl/reward" in r]

    with Reporting.of(cfg).live("rl", log_file, every_s=0.1), log_file.open("a") as log:
        log.write(json.dumps({"step": 1, "reward": 0.25}) + "\n" + '{"step": 2, "rew')  # row 2 half written
        log.flush()
        deadline = time.monotonic() + 30
        while not relayed() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert relayed() == [(1, 0.25)]  # while "training" goes on; the torn row waits for its end
        log.write('ard": 0.5}\n')
        log.flush()
    assert relayed() == [(1, 0.25), (2, 0.5)]


def test_a_backend_not_installed_is_named_before_the_trainer_starts(sft_venv, tmp_path):
    cfg = load_config(None, ["tracking.backend=wandb", f"sft.venv={sft_venv}"])
    with pytest.raises(ConfigError, match=r"tracking.backend=wandb: the package 'wandb' is not installed in the SFT environment"):
        Reporting.of(cfg).check(str(sft_venv / "bin" / "python"), f"the SFT environment {sft_venv}")
    assert Reporting.of(cfg).settings == {"report_to": "wandb", "run_name": "default", "project": "webdancer"}
    assert Reporting.of(load_config(None, [])).settings == {"report_to": "none"}  # trackio: fed from the trainer's log instead
    bad = CliRunner().invoke(cli, ["config", "show", "tracking.backend=neptune"])
    assert bad.exit_code == 2 and "choose one of trackio, wandb, swanlab, tensorboard, mlflow, none" in bad.output
