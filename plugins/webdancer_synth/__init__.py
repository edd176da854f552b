"""Browsing data construction: synthesizers `crawlqa` and `e2hqa` (stage 1 of WebDancer)."""

from webdancer import hookimpl


@hookimpl
def register_synthesizers(register):
    from webdancer_synth.crawlqa import CrawlQA
    from webdancer_synth.e2hqa import E2HQA

    register(CrawlQA)
    register(E2HQA)
