"""Terminal output: rich consoles for humans, one JSON object on stdout for machines."""

from __future__ import annotations

import json
import math
import os
import sys
from functools import lru_cache


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def color_enabled(stream) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org). FORCE_COLOR does not
    put escape codes into a pipe or a log file: a file that is not a terminal gets plain text."""
    return _isatty(stream) and not os.environ.get("NO_COLOR")


def _console(stderr: bool):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = _isatty(stream)
    color = color_enabled(stream)
    # Outside a terminal (logs, CI) rich would wrap tables at 80 columns; give them room instead.
    return Console(stderr=stderr, highlight=False, soft_wrap=True, force_terminal=tty,
                   color_system="auto" if color else None, no_color=not color,
                   width=None if tty or stderr else 160)


@lru_cache(maxsize=None)
def out():
    """Console on stdout for human-readable results (tables, summaries)."""
    return _console(stderr=False)


@lru_cache(maxsize=None)
def err():
    """Console on stderr for notes, warnings and errors: never mixes with --json output."""
    return _console(stderr=True)


def note(message: str) -> None:
    err().print(f"[dim]{_escape(message)}[/dim]")


def warn(message: str) -> None:
    err().print(f"[yellow]warning:[/yellow] {_escape(message)}")


def error_line(message: str) -> None:
    """The one line a failed command prints: control characters (a newline in a file name, a terminal escape)
    are written as escapes, so it stays one line whatever the paths and messages in it hold."""
    err().print(f"[bold red]error:[/bold red] {_escape(one_line(message))}", soft_wrap=True)


def one_line(text: str) -> str:
    """`text` with its control characters escaped (\n, \x1b...), except the ANSI colours strip_ansi removes."""
    from .errors import strip_ansi

    text = strip_ansi(str(text)).strip()
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _escape(text: str) -> str:
    from rich.markup import escape

    from .errors import strip_ansi

    return escape(strip_ansi(str(text)))


def _clean(obj):
    """JSON has no NaN/inf: write them as null (and say so in field docs)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def emit_json(obj) -> None:
    """Write exactly one JSON object (and a newline) to stdout."""
    sys.stdout.write(json.dumps(_clean(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
