"""`webdancer pipeline`: the whole job on one config, resumable at every stage, with a run report."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_pipeline.cli import pipeline

    cli.add_command(pipeline)


@hookimpl
def register_config_sections(register):
    from webdancer_pipeline.config import PipelineConfig

    register(PipelineConfig)
