"""The gradio demo (`webdancer demo`): streamed agent steps for one question at a time."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_demo.cli import demo

    cli.add_command(demo)
