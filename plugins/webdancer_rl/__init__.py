"""RL with verl: tool adapter, agent loop and parser for our wire format, reward entry, data, DAPO launcher.

Only `webdancer_rl.verl_tool` and `webdancer_rl.verl_agent` import verl: they run inside verl's
workers (.venvs/rl). The rest runs in the core environment.
"""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_rl.cli import rl

    cli.add_command(rl)


@hookimpl
def register_config_sections(register):
    from webdancer_rl.config import RlConfig

    register(RlConfig)
