"""verl's own checks of a `python -m verl.trainer.main_ppo` command, on any machine with verl: no GPU, no Ray.

`webdancer rl train` runs it before it launches verl (`--check` runs only this), and the contract suite runs it on
every shipped GPU recipe. It goes through what main_ppo and its workers do before they touch a GPU, with verl's
own code: hydra composes verl's `ppo_trainer` config with the command's overrides; `auto_set_device` and
`validate_config`; every section verl turns into its dataclasses (actor, ref, rollout, critic when used,
algorithm, the model: tokenizer and HF config read from its folder); the rollout engine's registration; an
agent-loop worker's setup (tools from the tool YAML, agent loops from the agent-loop YAML) and our agent loop
instantiated from the registry as verl does; the reward function and reward manager; RLHFDataset on the train
and val files; the Ray runtime env every worker will get. Where verl finds a problem only once GPUs run (a
sequence longer than the dynamic batch's token limit, prompts the dataset drops as overlong), it is refused here.

    python -m webdancer_rl.verl_preflight [--model FOLDER] -- OVERRIDE...

`--model` stands in for a model folder that is not on this machine (a 7B recipe checked in CI), recorded in the
output. Prints `WEBDANCER_PREFLIGHT {json}`; a refusal prints verl's own message and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

MARK = "WEBDANCER_PREFLIGHT "


class Refused(Exception):
    """A check failed: the message says which and why (verl's own words where verl refused)."""


def compose(overrides: list[str]):
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def _step(report: dict[str, Any], name: str, fn, *args):
    try:
        out = fn(*args)
    except Refused:
        raise
    except Exception as exc:  # verl's or a dependency's own error: its words are the message
        raise Refused(f"{name}: {type(exc).__name__}: {exc}") from exc
    report["checked"].append(name)
    return out


def check(overrides: list[str], model: str | None = None) -> dict[str, Any]:
    from omegaconf import OmegaConf

    report: dict[str, Any] = {"checked": [], "substituted": {}}
    config = _step(report, "hydra compose of verl's ppo_trainer", compose, overrides)
    if model:
        report["substituted"]["actor_rollout_ref.model.path"] = {"was": config.actor_rollout_ref.model.path, "now": model}
        OmegaConf.update(config, "actor_rollout_ref.model.path", model)

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.utils.device import auto_set_device

    def validate():
        auto_set_device(config)
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))

    _step(report, "validate_config", validate)
    _step(report, "resolve interpolations", OmegaConf.resolve, config)  # as verl's TaskRunner does before building workers
    arr = config.actor_rollout_ref
    _step(report, "actor config", omega_conf_to_dataclass, arr.actor)
    if need_reference_policy(config):
        _step(report, "ref config", omega_conf_to_dataclass, arr.ref)
    if need_critic(config):
        _step(report, "critic config", omega_conf_to_dataclass, config.critic)
    rollout = _step(report, "rollout config", omega_conf_to_dataclass, arr.rollout)
    _step(report, "checkpoint engine config", omega_conf_to_dataclass, arr.rollout.checkpoint_engine)

    def algorithm():
        from verl.trainer.config import AlgoConfig

        return omega_conf_to_dataclass(config.algorithm, AlgoConfig)

    _step(report, "algorithm config", algorithm)
    _step(report, "rollout engine registered", _rollout_registered, rollout.name)
    _step(report, "token limits", _token_limits, config)
    model_config = _step(report, "model config (tokenizer and HF config from the folder)", omega_conf_to_dataclass, arr.model)
    tokenizer, processor = model_config.tokenizer, model_config.processor

    def agent_loop_worker():
        from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

        return AgentLoopWorker(config, llm_client=None)

    worker = _step(report, "agent-loop worker setup (tools, agent loops)", agent_loop_worker)
    report["tools"] = [tool.name for tool in worker.tools]
    _step(report, "agent loop instantiated", _agent_loop, config, worker)

    def reward():
        from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
        from verl.trainer.ppo.reward import get_custom_reward_fn

        fn = get_custom_reward_fn(config)
        return get_reward_manager_cls(config.reward.reward_manager.name)(config, tokenizer, fn)

    _step(report, "reward function and manager", reward)
    for split in ("train", "val"):
        report[f"{split}_rows"] = _step(report, f"RLHFDataset on data.{split}_files", _dataset, config, split, tokenizer, processor)
    report["runtime_env"] = _step(report, "Ray runtime env", _runtime_env, config)
    return report


def _rollout_registered(name: str) -> None:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    if name not in RolloutReplicaRegistry._registry:
        raise Refused(f"actor_rollout_ref.rollout.name={name!r} is not a rollout engine of this verl "
                      f"({', '.join(RolloutReplicaRegistry._registry)}): set rl.rollout_engine")


def _token_limits(config) -> None:
    """verl checks these only inside its GPU workers, after Ray and the models have started."""
    data, actor = config.data, config.actor_rollout_ref.actor
    longest = int(data.max_prompt_length) + int(data.max_response_length)
    if actor.use_dynamic_bsz and int(actor.ppo_max_token_len_per_gpu) < longest:
        raise Refused(f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={actor.ppo_max_token_len_per_gpu} is below one whole "
                      f"rollout (data.max_prompt_length + data.max_response_length = {longest}): verl's dynamic batching "
                      "would fail on the GPUs; raise it (or set rl.micro_batch_size)")


def _agent_loop(config, worker) -> None:
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry

    name = config.actor_rollout_ref.rollout.agent.default_agent_loop
    if name not in _agent_loop_registry:
        raise Refused(f"actor_rollout_ref.rollout.agent.default_agent_loop={name!r} is not registered "
                      f"({', '.join(_agent_loop_registry)}): check {config.actor_rollout_ref.rollout.agent.agent_loop_config_path}")
    hydra.utils.instantiate(config=_agent_loop_registry[name], trainer_config=DictConfigWrap(config=config), server_manager=None,
                            tokenizer=worker.tokenizer, processor=worker.processor, hf_model_type=worker.hf_model_type,
                            dataset_cls=worker.dataset_cls, data_config=DictConfigWrap(config.data), tools=ToolListWrap(worker.tools))


def _dataset(config, split: str, tokenizer, processor) -> int:
    """verl's dataset over the split's files; prompts it would drop as overlong are refused, not lost silently."""
    import pyarrow.parquet as pq
    from verl.trainer.ppo.utils import create_rl_dataset

    files = config.data[f"{split}_files"]
    files = [files] if isinstance(files, str) else list(files)
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    dataset = create_rl_dataset(files, config.data, tokenizer, processor, is_train=split == "train")
    if len(dataset) < rows:
        raise Refused(f"verl's RLHFDataset keeps {len(dataset)} of the {rows} prompts of {', '.join(files)}: the rest are longer "
                      f"than data.max_prompt_length={config.data.max_prompt_length} tokens; raise rl.max_prompt_length")
    if len(dataset) == 0 and split == "train":
        raise Refused(f"{', '.join(files)} has no prompts: rerun `webdancer rl prepare`")
    return len(dataset)


def _runtime_env(config) -> dict[str, Any]:
    """What main_ppo passes to ray.init (verl's defaults merged with ray_kwargs.ray_init.runtime_env): names only."""
    from omegaconf import OmegaConf
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    runtime_env = OmegaConf.to_container(OmegaConf.merge(get_ppo_ray_runtime_env(config), config.ray_kwargs.ray_init.get("runtime_env", {})))
    python = runtime_env.get("py_executable")
    if python and not os.access(python, os.X_OK):
        raise Refused(f"ray_kwargs.ray_init.runtime_env.py_executable={python} is not an executable here; every Ray node needs "
                      "the RL environment at that path (set rl.venv)")
    return {"py_executable": python, "env_vars": sorted((runtime_env.get("env_vars") or {}))}


def main(argv: list[str]) -> int:
    model = None
    if argv[:1] == ["--model"]:
        model, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        report = check(argv, model)
    except Refused as exc:
        print(f"verl refuses this command: {exc}", file=sys.stderr)
        if os.environ.get("WEBDANCER_DEBUG"):
            traceback.print_exc()
        return 1
    print(MARK + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
