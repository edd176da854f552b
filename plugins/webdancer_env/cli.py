"""`webdancer env`: the environment for other trainers: TRL (`trl`), OpenEnv (`serve`), verifiers (`verifiers`)."""

from __future__ import annotations

import inspect
from typing import Optional

import click

SNIPPET = '''from trl import GRPOConfig, GRPOTrainer
from webdancer_env.trl import TRLEnvironment

env = TRLEnvironment.from_config({config!r}, {overrides!r})
tokenizer = env.tokenizer(MODEL_DIR)
trainer = GRPOTrainer(model=MODEL_DIR, processing_class=tokenizer, train_dataset=env.dataset(QA_FILE),
                      reward_funcs=env.reward_funcs(tokenizer), environment_factory=env.environment_factory,
                      args=GRPOConfig(output_dir="grpo", max_tool_calling_iterations={iterations}))
trainer.train()'''


@click.group("env")
def env_group() -> None:
    """The browsing environment (tools, rewards, turn rules) for other trainers."""


@env_group.command("trl")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (see configs/).")
@click.argument("overrides", nargs=-1)
def trl_cmd(config_path: Optional[str], overrides: tuple[str, ...]) -> None:
    """Show the environment TRL's GRPOTrainer gets (its tool methods, reward columns, turn limit) and the code to train with it."""
    from webdancer_env.trl import TRLEnvironment

    env = TRLEnvironment.from_config(config_path, overrides)
    instance = env.environment_factory()
    click.echo("tools (methods of the environment):")
    for schema in env.schemas:
        method = getattr(instance, schema["name"])
        click.echo(f"  {schema['name']}{inspect.signature(method)}")
    rewards = env.reward_set()
    click.echo("reward functions (weighted; TRL logs rewards/<name>): " + ", ".join(f"{n} x{w:g}" for n, w in rewards.weights.items()))
    click.echo(f"max_tool_calling_iterations: {env.max_tool_calling_iterations} (agent.max_turns={env.cfg.agent.max_turns})")
    click.echo("")
    click.echo(SNIPPET.format(config=config_path, overrides=list(overrides), iterations=env.max_tool_calling_iterations))


@env_group.command("serve")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (see configs/).")
@click.argument("overrides", nargs=-1)
@click.option("--qa", type=str, default=None, help="Questions reset picks from (index=, seed=, or in turn): any source `webdancer sample` reads.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--max-sessions", type=int, default=64, show_default=True, help="Concurrent WebSocket sessions, each with its own episode.")
@click.option("--idle-timeout-s", type=float, default=600.0, show_default=True, help="A session idle this long is closed.")
def serve_cmd(config_path: Optional[str], overrides: tuple[str, ...], qa: Optional[str], host: str, port: int, max_sessions: int,
              idle_timeout_s: float) -> None:
    """Serve the environment to OpenEnv clients: reset/step/state over HTTP and WebSocket (openenv-core's server)."""
    import uvicorn

    from webdancer import console
    from webdancer.config_loader import load_config
    from webdancer_env.openenv_server import build_app

    cfg = load_config(config_path, overrides)
    app = build_app(cfg, qa, max_sessions, idle_timeout_s)
    console.echo(f"OpenEnv environment at http://{host}:{port} (WebSocket /ws): tools {', '.join(app.state.webdancer.cfg.agent.tools)}, "
                 f"{len(app.state.webdancer.tasks)} questions, up to {max_sessions} sessions")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@env_group.command("verifiers", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--venv", default=".venvs/verifiers", show_default=True, help="The verifiers environment (scripts/setup_verifiers.sh).")
@click.argument("vf_eval_args", nargs=-1, type=click.UNPROCESSED)
def verifiers_cmd(venv: str, vf_eval_args: tuple[str, ...]) -> None:
    """Evaluate with verifiers: `vf-eval webdancer-verifiers VF_EVAL_ARGS...` in its own environment
    (e.g. --env.taskset.qa FILE -m MODEL --client.base-url URL --no-push)."""
    import os
    import subprocess
    from pathlib import Path

    vf_eval = Path(venv) / "bin" / "vf-eval"
    if not vf_eval.is_file():
        raise click.ClickException(f"{vf_eval} is missing: set up the verifiers environment with `bash scripts/setup_verifiers.sh` "
                                   "(or point --venv at one)")
    env = {**os.environ, "PATH": f"{vf_eval.parent.resolve()}{os.pathsep}{os.environ.get('PATH', '')}"}  # uv for its chat program
    raise SystemExit(subprocess.call([str(vf_eval), "webdancer-verifiers", *vf_eval_args], env=env))
