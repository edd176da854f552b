"""The first-party context policies (`agent.context`): blank_old (the default), keep_last_k and summarize."""

from webdancer import hookimpl


@hookimpl
def register_context_policies(register):
    from webdancer.context import BlankOld, KeepLastK
    from webdancer_context.summarize import Summarize

    register(BlankOld)
    register(KeepLastK)
    register(Summarize)
