"""Loads plugins from the `webdancer` entry-point group and keeps the registry of named components."""

from __future__ import annotations

import importlib.metadata
import inspect
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from webdancer import hookspecs
from webdancer.errors import PluginError

ENTRY_POINT_GROUP = "webdancer"
KINDS = ("tools", "rewards", "synthesizers", "policies")  # the core's; plugins may declare more (see hookspecs)


@dataclass
class PluginInfo:
    name: str
    distribution: str = ""
    version: str = ""
    error: str = ""
    registers: dict[str, list[str]] = field(default_factory=dict)
    commands: bool = False


class Plugins:
    """The plugin manager plus the components each plugin registered, by kind and name."""

    def __init__(self, load_entrypoints: bool = True):
        self.pm = pluggy.PluginManager("webdancer")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._registry: dict[str, dict[str, tuple[Any, str]]] | None = None
        if load_entrypoints:
            self._load_entrypoints()

    def _load_entrypoints(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.info:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, getattr(dist, "name", "") or "", getattr(dist, "version", "") or "")
            self.info[ep.name] = info
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the CLI down with it
                info.error = f"{type(exc).__name__}: {exc}"
                continue
            self._add(module, ep.name)

    def _add(self, module: ModuleType | object, name: str) -> None:
        specs = getattr(module, "hookspecs", None)
        if inspect.ismodule(specs) and specs is not hookspecs:  # a plugin's own extension points
            self.pm.add_hookspecs(specs)
        self.pm.register(module, name=name)

    def register(self, module: ModuleType | object, name: str | None = None) -> None:
        """Register an in-process plugin (tests, notebooks): the same path as entry points."""
        name = name or getattr(module, "__name__", None) or repr(module)
        self._add(module, name)
        self.info.setdefault(name, PluginInfo(name))
        self._registry = None

    @property
    def kinds(self) -> list[str]:
        """Component kinds: the core's, then those plugins declared (`register_<kind>(register)` hookspecs)."""
        declared = sorted(
            name[len("register_"):] for name, caller in vars(self.pm.hook).items()
            if name.startswith("register_") and getattr(caller, "spec", None) is not None and "register" in caller.spec.argnames
        )
        return list(KINDS) + [k for k in declared if k not in KINDS]

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registry = None

    def _collect(self) -> dict[str, dict[str, tuple[Any, str]]]:
        kinds = self.kinds
        registry: dict[str, dict[str, tuple[Any, str]]] = {k: {} for k in kinds}
        for info in self.info.values():
            info.registers = {k: [] for k in kinds}
        for kind in kinds:
            caller = getattr(self.pm.hook, f"register_{kind}")
            for impl in reversed(caller.get_hookimpls()):
                plugin_name = impl.plugin_name

                def register(component: Any, _kind: str = kind, _plugin: str = plugin_name) -> None:
                    cname = getattr(component, "name", None)
                    if not isinstance(cname, str) or not cname:
                        raise PluginError(f"plugin '{_plugin}' registered a {singular(_kind)} without a string `name`: {component!r}")
                    if cname in registry[_kind]:
                        other = registry[_kind][cname][1]
                        raise PluginError(
                            f"{singular(_kind)} name '{cname}' is registered twice: by plugin '{other}' and by plugin '{_plugin}'; "
                            f"uninstall one of them or rename the component"
                        )
                    registry[_kind][cname] = (component, _plugin)
                    self.info.setdefault(_plugin, PluginInfo(_plugin)).registers.setdefault(_kind, []).append(cname)

                impl.function(register=register)
        for impl in self.pm.hook.register_commands.get_hookimpls():
            self.info.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name)).commands = True
        return registry

    @property
    def registry(self) -> dict[str, dict[str, tuple[Any, str]]]:
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def components(self, kind: str) -> dict[str, Any]:
        return {name: comp for name, (comp, _) in self.registry.get(kind, {}).items()}

    def owners(self, kind: str) -> dict[str, str]:
        """The plugin that registered each component of `kind`, by component name."""
        return {name: plugin for name, (_, plugin) in self.registry.get(kind, {}).items()}

    def get(self, kind: str, name: str) -> Any:
        """The component `name` of `kind`; an unknown name is an error listing what is installed."""
        if kind not in self.registry:
            raise PluginError(f"no plugin declares components of kind '{kind}' (kinds: {', '.join(self.registry)}); see `webdancer plugins`")
        entry = self.registry[kind].get(name)
        if entry is None:
            have = ", ".join(sorted(self.registry[kind])) or "none"
            hint = ""
            broken = [i.name for i in self.info.values() if i.error]
            if broken:
                hint = f"; plugins that failed to load: {', '.join(broken)} (see `webdancer plugins`)"
            raise PluginError(f"no {singular(kind)} named '{name}' is registered (installed: {have}){hint}")
        return entry[0]

    def options(self, kind: str, name: str, options: Any, where: str) -> Any:
        """`options` checked against component `name`'s own `Config` dataclass (errors name `where`)."""
        from webdancer.options import validate_options

        return validate_options(self.get(kind, name).Config, options or {}, where)

    def build(self, kind: str, name: str, options: Any, where: str, *args: Any) -> Any:
        """Component `name` of `kind`, built from checked `options`: the one way config becomes a component.

        `args` go to the constructor after the config (a policy's model endpoint).
        """
        return self.get(kind, name)(self.options(kind, name, options, where), *args)

    def describe(self) -> list[PluginInfo]:
        self.registry  # noqa: B018 - fills `registers`
        return sorted(self.info.values(), key=lambda i: i.name)

    def add_commands(self, cli: Any) -> None:
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:
                info = self.info.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                info.error = f"register_commands failed: {type(exc).__name__}: {exc}"


def singular(kind: str) -> str:
    """`policies` -> `policy`, `search_backends` -> `search backend`: a component kind's name for one of them."""
    return (kind[:-3] + "y" if kind.endswith("ies") else kind[:-1]).replace("_", " ")


_default: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin registry, loaded from entry points on first use."""
    global _default
    if _default is None:
        _default = Plugins()
    return _default


def set_plugins(plugins: Plugins | None) -> None:
    """Swap the process-wide registry (tests register in-process plugins this way)."""
    global _default
    _default = plugins
