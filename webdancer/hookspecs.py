"""Every extension point of webdancer, in one place.

Each hook receives a `register` callable; a plugin calls it once per component class it
provides. Components are classes with a unique `name` attribute; registering a name that
another plugin already registered is an error naming both plugins.
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
def register_search_backends(register):
    """Register search backends (subclasses of `webdancer_web.search.SearchBackend`) for the `search` tool.

    Selected by `tools.search.backend`; first-party: `local` (BM25 over the local web), `serper`.
    """


@hookspec
def register_page_readers(register):
    """Register page readers (subclasses of `webdancer_web.visit.PageReader`) for the `visit` tool.

    A reader turns a URL into page text; selected by `tools.visit.reader`; first-party: `local`, `jina`.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the `webdancer` click group `cli` (e.g. `webdancer web ...`)."""
