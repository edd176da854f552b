"""Models and serving: `webdancer model list|export`, `webdancer serve` (transformers / SGLang / external)."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_models.cli import model, serve

    cli.add_command(model)
    cli.add_command(serve)


@hookimpl
def register_config_sections(register):
    from webdancer_models.config import ServeConfig

    register(ServeConfig)
