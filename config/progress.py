"""The progress bar of berth's long management commands."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


def progress_bar(stream) -> Progress:
    """A bar on the command's stderr, shown only while that is a terminal:
    piped output (logs, scripts and tests reading the demo's lines) gets
    nothing from it. Use it as a context manager; it clears itself when done."""
    # Django's OutputWrapper ends every write with a newline, which would
    # break the bar's redraw in place; write to the stream it wraps.
    out = getattr(stream, "_out", stream)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=out),
        # isatty, not rich's own detection, which FORCE_COLOR in a CI
        # environment would turn on for a log file.
        disable=not out.isatty(),
        transient=True,
    )
