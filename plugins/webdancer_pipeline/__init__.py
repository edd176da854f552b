"""`webdancer pipeline`: the whole job on one config, resumable at every stage, with a run report."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_pipeline.cli import pipeline

    cli.add_command(pipeline)
