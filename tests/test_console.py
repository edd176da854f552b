"""webdancer.console: what a command prints when its output is a log file, not a terminal."""

import logging
import threading

import pytest

from webdancer import console


@pytest.fixture
def verbosity():
    before = console.verbosity()
    yield console.configure
    console._verbosity = before


def test_progress_off_a_terminal_is_one_line_per_tenth_and_nothing_when_quiet(capsys, verbosity):
    verbosity(0)
    with console.Progress("sampling", 50) as bar:
        for done in range(1, 51):
            bar.update(done, f"correct {done // 2}")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0] == "   sampling: 5/50 (10 %)  correct 2" and lines[-1].startswith("   sampling: 50/50 (100 %)")
    verbosity(-1)
    with console.Progress("sampling", 50) as bar:
        bar.update(50)
    console.echo("a stage line")
    console.summary("results: runs/x/report.md")
    assert capsys.readouterr().out == "results: runs/x/report.md\n"


def test_a_librarys_banner_becomes_debug_logging_and_other_threads_keep_printing(capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="webdancer.tracking")
    other_thread_printed = threading.Event()

    def progress_line():
        print("step 1/2 reward 0.5", flush=True)
        other_thread_printed.set()

    with console.library_output("tracking"):
        print("\x1b[1m* Run finished. Uploading logs to Trackio (please wait...)\x1b[0m")
        thread = threading.Thread(target=progress_line)
        thread.start()
        thread.join()
    assert other_thread_printed.is_set()
    out = capsys.readouterr()
    assert out.out == "step 1/2 reward 0.5\n" and "Trackio" not in out.out + out.err
    assert [r.getMessage() for r in caplog.records] == ["* Run finished. Uploading logs to Trackio (please wait...)"]


def test_a_warning_repeated_with_other_values_is_shown_once_unless_verbose(verbosity):
    verbosity(0)
    once = console._Once()
    records = [logging.LogRecord("webdancer.llm", logging.WARNING, __file__, 1, "model call failed (%s), retry %d", (f"HTTP 503 #{i}", i), None)
               for i in range(3)]
    assert [once.filter(r) for r in records] == [True, False, False]
    verbosity(1)
    assert once.filter(records[1])


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert console.colour_allowed(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not console.colour_allowed(Tty())
    assert console.plain("\x1b[1m\x1b[38;5;208mtrackio show\x1b[0m") == "trackio show"
