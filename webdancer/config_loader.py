"""Loading the config: omegaconf YAML with `defaults:` composition and `key=value` overrides, checked into the dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from webdancer.config import WebdancerConfig, config_schema
from webdancer.errors import ConfigError
from webdancer.options import closest_keys

# Keys that moved, and where to: a config that still sets one gets this message, not a silent default.
MOVED_KEYS = {
    "filter.judge": "judge.model (the judge is configured once, for the filter, eval and RL)",
    "eval.judge": "judge.model (the judge is configured once, for the filter, eval and RL)",
    "eval.judge_prompt": "judge.prompt_file",
    "eval.judge_concurrency": "judge.concurrency",
    "reward_options.judge": "judge (judge.model, judge.prompt_file: the judge is configured once)",
    "reward_options": "rewards.<name> (a reward's options sit beside its weight: rewards.answer: {weight: 0.9, f1_threshold: 0.8})",
    "filter.f1_threshold": "rewards.answer.f1_threshold (the filter scores with `rewards`, as eval and RL do)",
    "eval.f1_threshold": "rewards.answer.f1_threshold (eval scores with `rewards`, as the filter and RL do)",
    "policy.options": "policies.<name> (every component's options live at <kind>.<name>: policies.expert: {...})",
    "policy.name": "agent.policy (the policy the agent runs; its options: policies.<name>)",
    "policy": "agent.policy (the policy's name) and policies.<name> (its options)",
}


def _check_moved(source: str, layer: DictConfig) -> None:
    for old, new in MOVED_KEYS.items():
        if OmegaConf.select(layer, old, default=None) is not None:
            raise ConfigError(f"{source}: '{old}' has moved: set {new}")
    rewards = OmegaConf.select(layer, "rewards", default=None)
    for name, value in (rewards.items() if isinstance(rewards, DictConfig) else ()):
        if not isinstance(value, DictConfig) and value is not None:
            raise ConfigError(f"{source}: 'rewards.{name}' is {value!r}: a reward is now its weight and options together; "
                              f"set rewards.{name}.weight: {value}")
        if name == "judge" and isinstance(value, DictConfig) and set(value.keys()) - {"weight"}:
            raise ConfigError(f"{source}: 'rewards.judge' takes only a weight: set the judge's options in the judge section "
                              "(judge.model, judge.prompt_file; the judge is configured once, for the filter, eval and RL)")


def _fields_at(schema: type, dotted: str) -> list[str]:
    """The field names of the dataclass holding the last key of `dotted` inside `schema`."""
    import typing

    cls: Any = schema
    for part in [p for p in dotted.split(".") if p][:-1]:
        if not dataclasses.is_dataclass(cls):
            return []
        cls = typing.get_type_hints(cls).get(part)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """Load `path`, merging the files its `defaults:` list names (relative to it) underneath it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'defaults' includes itself through {' -> '.join(str(p) for p in seen)}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    includes = data.pop("defaults", []) or []
    if isinstance(includes, str):
        includes = [includes]
    merged = OmegaConf.create()
    for inc in includes:
        if not isinstance(inc, str):
            raise ConfigError(f"{path}: 'defaults' entries must be file paths, got {inc!r}")
        merged = OmegaConf.merge(merged, _load_yaml(path.parent / inc, seen + (path,)))
    return OmegaConf.merge(merged, OmegaConf.create(data))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), schema: type | None = None) -> Any:
    """Compose defaults <- YAML file(s) <- `key=value` overrides, validated into `schema` (default: the core's
    sections and every installed plugin's, `config_schema()`)."""
    full = schema is None
    schema = config_schema() if schema is None else schema
    base = OmegaConf.structured(schema)
    layers: list[tuple[str, DictConfig]] = []
    if path is not None:
        layers.append((str(path), _load_yaml(Path(path))))
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} must look like key=value (e.g. agent.max_turns=10)")
    if overrides:
        try:
            layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"command-line overrides: {exc}") from None
    merged = base
    for source, layer in layers:
        if full:
            _check_moved(source, layer)
        try:
            merged = OmegaConf.merge(merged, layer)
        except ConfigKeyError as exc:
            key = exc.full_key or str(exc.key)
            last = key.split(".")[-1]
            hint = "; a plugin's section is there only when that plugin is installed and loads (`webdancer plugins`)" if "." not in key else ""
            raise ConfigError(f"{source}: unknown config key '{key}'; {closest_keys(last, _fields_at(schema, key))}{hint}") from None
        except ValidationError as exc:
            key = exc.full_key or str(exc.key)
            raise ConfigError(f"{source}: bad value for '{key}': {str(exc).splitlines()[0]}") from None
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "")
        raise ConfigError(f"config: '{key}': {str(exc).splitlines()[0]}") from None
    _check_choices(cfg, "")
    if isinstance(cfg, WebdancerConfig):
        from webdancer.plugins import get_plugins
        from webdancer.rewards import configured_weights

        check_component_sections(cfg)  # what the user wrote; a plugin's config_loaded hook may add to it after
        get_plugins().pm.hook.config_loaded(cfg=cfg)
        for name, weight in configured_weights(cfg).items():  # `config show` and every stage see the weights scored with
            cfg.rewards[name] = {**(cfg.rewards.get(name) or {}), "weight": weight}
        from webdancer.breaker import BREAKERS

        BREAKERS.configure(cfg.infra)  # the process's breakers follow the config it runs on
    return cfg


COMPONENT_SECTIONS = {"tools": "tools", "policies": "policies", "rewards": "rewards", "synth": "synthesizers",
                      "context": "context_policies"}  # section: kind


def check_component_sections(cfg: Any) -> None:
    """Every `tools.<name>`, `policies.<name>`, `rewards.<name>` and `synth.<name>` names an installed component and
    holds only options its own Config accepts, whether or not this command uses it: a typo (`tools.serach`, a wrong
    option) is an error at load, in `config show` as in the stage that would have ignored or refused it later."""
    from webdancer.options import validate_options
    from webdancer.plugins import get_plugins, singular

    plugins = get_plugins()
    installed_context = plugins.components("context_policies")
    if installed_context and cfg.agent.context not in installed_context:  # none installed: the build names what is missing
        hint = closest_keys(cfg.agent.context, sorted(installed_context), "context policy names")
        raise ConfigError(f"'agent.context': no context policy named '{cfg.agent.context}' is registered; {hint}")
    for section, kind in COMPONENT_SECTIONS.items():
        installed = plugins.components(kind)
        for name, options in (getattr(cfg, section) or {}).items():
            if name not in installed:
                hint = closest_keys(name, sorted(installed), f"{singular(kind)} names")
                broken = [i.name for i in plugins.info.values() if i.error]
                raise ConfigError(f"'{section}.{name}': no {singular(kind)} named '{name}' is registered; {hint}"
                                  + (f" (plugins that failed to load: {', '.join(broken)})" if broken else ""))
            options = {k: v for k, v in (options or {}).items() if not (section == "rewards" and k == "weight")}
            config_class = getattr(installed[name], "Config", None)
            if config_class is not None:
                validate_options(config_class, options, f"{section}.{name}")


def _check_choices(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"bad value for '{prefix}{f.name}': {value!r}; choose one of {', '.join(choices)}")
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")


def config_to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
