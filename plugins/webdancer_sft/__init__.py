"""SFT cold start with LLaMA-Factory: `webdancer sft export` and `webdancer sft train`."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_sft.cli import sft

    cli.add_command(sft)


@hookimpl
def register_config_sections(register):
    from webdancer_sft.config import SftConfig

    register(SftConfig)
