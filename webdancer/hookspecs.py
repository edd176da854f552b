"""The core's extension points: tools, rewards, synthesizers, rollout policies, context policies, config sections, CLI commands.

Each `register_<kind>` hook receives a `register` callable; a plugin calls it once per component
class it provides. Components are classes with a unique `name` attribute; registering a name that
another plugin already registered is an error naming both plugins. A plugin that offers extension
points of its own declares them the same way in its own `hookspecs` module (webdancer_web's
search backends and page readers), and they become component kinds like these.
"""

import pluggy

hookspec = pluggy.HookspecMarker("webdancer")
hookimpl = pluggy.HookimplMarker("webdancer")


@hookspec
def register_tools(register):
    """Register tool classes (subclasses of `webdancer.tools.Tool`) the agent can call.

    Called when the plugin registry is first used. A tool class declares `name`,
    `description`, `parameters` (JSON schema) and an async `call(arguments)`.
    """


@hookspec
def register_rewards(register):
    """Register reward classes (subclasses of `webdancer.rewards.Reward`).

    Used to score trajectories in filtering, evaluation and RL (verl's `compute_score`).
    """


@hookspec
def register_synthesizers(register):
    """Register data synthesizer classes (subclasses of `webdancer.synth.Synthesizer`).

    A synthesizer writes QA items (CrawlQA, E2HQA, ...) for `webdancer synth NAME`.
    """


@hookspec
def register_policies(register):
    """Register rollout policy classes (subclasses of `webdancer.policies.Policy`).

    A policy produces the next assistant turn of a ReAct trajectory (a teacher LLM, an
    offline expert, ...); the agent loop is the same for all of them.
    """


@hookspec
def register_context_policies(register):
    """Register context policy classes (subclasses of `webdancer.context.ContextPolicy`).

    `agent.context` selects one: before every model turn it decides what of the conversation the prompt keeps
    within `agent.max_context_tokens` (sampling, evaluation and the demo).
    """


@hookspec
def register_config_sections(register):
    """Register the plugin's own config sections: dataclasses whose `name` class attribute is the top-level
    key they are read from (`serve`, `web`, `rl` ...). Loaded configs hold them typed beside the core's
    sections, `webdancer config show` prints them, and a key they do not have is refused by name."""


@hookspec
def config_loaded(cfg):
    """Called with each config just loaded (every section typed), before any stage uses it: a plugin fills the
    defaults of its options from other sections (the web tools default to the configured offline web)."""


@hookspec
def register_commands(cli):
    """Add subcommands to the `webdancer` click group `cli` (e.g. `webdancer web ...`)."""
