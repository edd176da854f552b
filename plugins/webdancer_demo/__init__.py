"""The gradio demo (`webdancer demo`): streamed agent steps for one question at a time."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_demo.cli import demo

    cli.add_command(demo)


@hookimpl
def register_config_sections(register):
    from webdancer_demo.config import DemoConfig

    register(DemoConfig)
