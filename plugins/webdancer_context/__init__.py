"""The first-party context policies (`agent.context`): blank_old, the default, and keep_last_k."""

from webdancer import hookimpl


@hookimpl
def register_context_policies(register):
    from webdancer.context import BlankOld, KeepLastK

    register(BlankOld)
    register(KeepLastK)
