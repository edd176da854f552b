"""Every shipped GPU recipe, through the trainers' and servers' own code as far as a CPU goes.

For each config: the real commands, printed by our launchers (`--print-command`), then run through verl's own checks
(hydra compose, validate_config, its dataclasses, RLHFDataset on our parquet, tool and agent-loop loading, its reward
manager on our compute_score, the Ray runtime env), LLaMA-Factory's own parser on the YAML (DeepSpeed config
included, launched under torchrun as its launcher would) and its dataset loader, and SGLang's own argument parser.
A model folder that exists only on a cluster (/models/...) is stood in for by the tiny model, as each check records.
A refusal fails the test with the trainer's own message.
"""

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from webdancer.cli import cli
from webdancer.config_loader import load_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ["gpu-qwen2.5-7b.yaml", "gpu-qwq-32b.yaml", "gpu-serper-jina.yaml", "rl/dapo.yaml", "rl/qwen2.5-7b.yaml", "rl/qwq-32b.yaml",
           "rl/tiny.yaml"]
KEYS = {"SERPER_API_KEY": "serper-secret-1", "JINA_API_KEY": "jina-secret-2", "DASHSCOPE_API_KEY": "dashscope-secret-3"}
QUESTIONS = [
    {"question": "Who invented the integrated circuit in 1958 at Texas Instruments?", "answer": "Jack Kilby", "tag": "crawlqa"},
    {"question": "Which company founded in San Jose in 1984 invented the field-programmable gate array?", "answer": "Xilinx", "tag": "crawlqa"},
    {"question": "In which year did Guido van Rossum first release Python?", "answer": "1991", "tag": "e2hqa"},
]


def recipe_config(name):
    return load_config(str(ROOT / "configs" / name), [])


def roles(name):
    cfg = recipe_config(name)
    return {"rl": cfg.rl.engine == "verl", "sft": not cfg.sft.use_cpu, "serve": cfg.serve.backend == "sglang"}


def recipes(role):
    return [name for name in RECIPES if roles(name)[role]]


def test_every_shipped_gpu_config_is_a_recipe_here():
    shipped = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").glob("gpu-*.yaml"))
    shipped += [f"rl/{n}.yaml" for n in ("dapo", "qwen2.5-7b", "qwq-32b", "tiny")]
    assert sorted(RECIPES) == sorted(shipped)
    assert all(any(roles(name).values()) for name in RECIPES)


def cli_runner(tmp_path, web):
    """`webdancer ...` on a recipe, with this run's folder, the offline web and the environments of this checkout."""
    from webdancer.plugins import get_plugins

    get_plugins().add_commands(cli)  # what `webdancer` (webdancer.cli:main) does first

    def run(name, *args):
        overrides = [f"run.root={tmp_path / 'runs'}", f"web.root={web.root}", f"web.port={web.port}", "agent.current_date=2026-12-06",
                     *(f"{section}.venv={ROOT / '.venvs' / section}" for section in ("rl", "sft", "serve"))]
        result = CliRunner().invoke(cli, [*args[:2], "-c", str(ROOT / "configs" / name), *args[2:], *overrides], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output, load_config(str(ROOT / "configs" / name), overrides)

    return run


@pytest.fixture
def run_cli(local_web, tmp_path, monkeypatch):
    """cli_runner from another folder (paths must come out absolute), with API keys in the environment."""
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return cli_runner(tmp_path, local_web[0])


@pytest.fixture(scope="module")
def verl_checked(local_web, tmp_path_factory, tiny_model):
    """Every RL recipe's command as `rl prepare` + `rl train --print-command` write it (from another folder, API keys in
    the environment), then verl's checks of all of them in one process of the RL environment (verl imported once)."""
    from webdancer_rl.train import output_dir

    printed = {}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in KEYS.items():
            mp.setenv(key, value)
        for name in recipes("rl"):
            tmp = tmp_path_factory.mktemp("recipe")
            mp.chdir(tmp)
            run = cli_runner(tmp, local_web[0])
            qa = tmp / "qa.jsonl"
            qa.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
            run(name, "rl", "prepare", str(qa), "rl.val_fraction=0.34")
            out, cfg = run(name, "rl", "train", "--print-command", "rl.val_fraction=0.34")
            printed[name] = {"command": shlex.split(out.splitlines()[0]), "script": (output_dir(cfg) / "command.sh").read_text(), "cfg": cfg}
        batch = [{"name": name, "command": p["command"], "model": str(tiny_model)} for name, p in printed.items()]
        proc = subprocess.run([str(ROOT / ".venvs" / "rl" / "bin" / "python"), str(Path(__file__).with_name("verl_checks.py"))],
                              input=json.dumps(batch), capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: {**p, "report": reports[name]} for name, p in printed.items()}


@pytest.mark.parametrize("name", recipes("rl"))
def test_verl_accepts_the_rl_command(name, verl_checked):
    checked = verl_checked[name]
    command, script, cfg, report = checked["command"], checked["script"], checked["cfg"], checked["report"]
    assert "refused" not in report, report.get("refused")  # verl's own words
    assert command[1:3] == ["-m", "verl.trainer.main_ppo"] and shlex.join(command) in script
    assert not any(secret in shlex.join(command) + script for secret in KEYS.values())  # keys travel in Ray's job env, named only
    assert "RAY_JOB_CONFIG_JSON_ENV_VAR" in script and "-m webdancer_rl.ray_job" in script
    paths = [o.split("=", 1)[1] for o in command if o.split("=", 1)[0].endswith(("_files", "_path", "default_local_dir", "py_executable"))]
    assert paths and all(p.startswith("/") for p in paths if p not in ("null", "")), paths  # Ray workers start elsewhere
    assert {"validate_config", "agent loop instantiated", "reward function and manager", "RLHFDataset on data.train_files",
            "Ray runtime env"} <= set(report["checked"])
    assert report["train_rows"] + report["val_rows"] == 3 and report["train_rows"] > 0 and report["tools"] == list(cfg.agent.tools)
    assert report["runtime_env"]["py_executable"] == command[0]
    assert {"HF_HUB_OFFLINE", "VERL_FILE_LOGGER_PATH"} <= set(report["runtime_env"]["env_vars"])


@pytest.mark.parametrize("name", recipes("sft"))
def test_llamafactory_accepts_the_sft_run(name, run_cli, tmp_path, tiny_model, expert_trajectories, sft_venv, monkeypatch):
    from webdancer_sft.export import export_sft
    from webdancer_sft.train import preflight

    monkeypatch.chdir(ROOT)  # the recipes name their DeepSpeed config from the repository root
    cfg = recipe_config(name)
    export_sft(expert_trajectories, tmp_path / "runs" / cfg.run.name / "sft_data")
    printed, cfg = run_cli(name, "sft", "train", "--print-command")
    command = shlex.split(printed.splitlines()[0])
    config = Path(command[-1])
    script = (config.parent / "command.sh").read_text()
    assert command[1] == "train" and config.is_absolute() and shlex.join(command) in script
    assert 'bin:"$PATH"' in script  # torchrun (started by name on a multi-GPU node) comes from the SFT environment
    if cfg.sft.extra.get("deepspeed"):
        assert "export FORCE_TORCHRUN=1" in script  # LLaMA-Factory refuses DeepSpeed outside torchrun
    report = preflight(cfg.sft, command, model=str(tiny_model))
    assert report["examples"] > 0 and report["distributed"] == "ParallelMode.DISTRIBUTED"
    assert report["deepspeed"] == str((ROOT / cfg.sft.extra["deepspeed"]).resolve())
    assert report["substituted"]["use_cpu"]["now"] is True  # bf16 and the GPU half of DeepSpeed stay unchecked here


_SGLANG_CHECKED: dict = {}  # command -> `serve --check`'s output: recipes that share a serve section are checked once


@pytest.mark.parametrize("name", recipes("serve"))
def test_sglang_accepts_the_serve_command(name, run_cli):
    printed, cfg = run_cli(name, "serve", "--print-command")
    command = shlex.split(printed.splitlines()[0])
    assert command[0] == str(ROOT / ".venvs" / "serve" / "bin" / "python") and command[1:3] == ["-m", "sglang.launch_server"]
    if printed not in _SGLANG_CHECKED:
        _SGLANG_CHECKED[printed] = run_cli(name, "serve", "--check")[0]
    assert "SGLang accepts the command" in _SGLANG_CHECKED[printed] and f"tp {cfg.serve.tensor_parallel}" in _SGLANG_CHECKED[printed]


def test_the_check_flags_run_the_trainers_checks_from_the_cli(run_cli, tmp_path, tiny_model, expert_trajectories, sft_venv, monkeypatch):
    """`rl train --check` and `sft train --check` (what a user runs on a cluster's head node before submitting), with
    the model folder on this machine: the trainer's own checks, no GPU; a refusal comes back as the trainer's message."""
    from webdancer_sft.export import export_sft

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    run_cli("rl/tiny.yaml", "rl", "prepare", str(qa), "rl.val_fraction=0.34")
    out, _ = run_cli("rl/tiny.yaml", "rl", "train", "--check", "rl.val_fraction=0.34", f"rl.model_path={tiny_model}")
    assert "verl accepts the command" in out and "tools search, visit" in out
    refused = CliRunner().invoke(cli, ["rl", "train", "-c", str(ROOT / "configs" / "rl" / "tiny.yaml"), "--check", f"rl.model_path={tiny_model}",
                                       f"run.root={tmp_path / 'runs'}", f"rl.venv={ROOT / '.venvs' / 'rl'}", "rl.val_fraction=0.34",
                                       "rl.extra=[actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1000]", "rl.micro_batch_size=0"])
    assert refused.exit_code == 2 and "verl refuses this command: actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1000 is below one whole" in refused.output

    monkeypatch.chdir(ROOT)
    export_sft(expert_trajectories, tmp_path / "runs" / "qwen7b" / "sft_data")
    out, _ = run_cli("gpu-qwen2.5-7b.yaml", "sft", "train", "--check", f"sft.model_path={tiny_model}")
    assert "LLaMA-Factory accepts" in out and "ParallelMode.DISTRIBUTED" in out and "ds_z3_config.json" in out
