"""`webdancer data`: a run's artifacts as a Hugging Face dataset folder (parquet + dataset card)."""

from webdancer import hookimpl


@hookimpl
def register_commands(cli):
    from webdancer_data.cli import data

    cli.add_command(data)
