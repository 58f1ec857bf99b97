"""Terminal messages whose text is printed verbatim: rich styles only our own words.

Anything a user typed (paths, names, values) or a library said (exception text) may hold `[...]`,
which rich's console would read as markup: a `[x]` in a path vanished from messages, and `[/]`
crashed the CLI. Every message of the CLI is therefore a `rich.text.Text` built here: plain
strings are kept as they are (no markup, no emoji codes, no highlighting), and a `(text, style)`
pair styles a word of ours.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

__all__ = ["error", "say", "text"]

Part = str | tuple[str, str]


def text(*parts: Part) -> Text:
    """One line of plain strings (verbatim) and (text, style) pairs."""
    return Text.assemble(*(p if isinstance(p, tuple) else str(p) for p in parts))


def say(console: Any, *parts: Part) -> None:
    """Print one message, unbroken (a path in it stays whole for copying)."""
    console.print(text(*parts), soft_wrap=True)


def error(console: Any, message: str) -> None:
    say(console, ("error:", "bold red"), " ", message)
