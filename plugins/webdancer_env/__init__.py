"""The browsing environment for other trainers: TRL's `environment_factory` (`webdancer_env.trl`)."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_env.cli import env_group

    cli.add_command(env_group)
