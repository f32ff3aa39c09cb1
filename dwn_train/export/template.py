"""The code templates: real C and Verilog files in templates/ (dwn_model.h, dwn_runtime.c,
dwn_main.c, dwn_engine.c, dwn_tb.v, dwn_shell.v), read and filled here and nowhere else.

A template that takes generated code holds the line MARKER exactly once; `fill(name, block)`
replaces that line with `block` (whole lines: #defines, typedefs, static data, `define lines) and
keeps the rest verbatim. The templates lie inside the package, in a checkout and in a wheel alike.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "templates"
MARKER = "/* @DWN_GENERATED@ */"


def path(name: str) -> Path:
    """The template file `name`; a missing one says to reinstall."""
    found = FOLDER / name
    if not found.is_file():
        raise FileNotFoundError(f"dwn-train's template {found} is missing; reinstall the package.")
    return found


def read(name: str) -> str:
    return path(name).read_text()


def splice(text: str, block: str) -> str:
    """`text` with its marker line replaced by `block` (whole lines, ending in a newline)."""
    before, marker, after = text.partition(MARKER + "\n")
    if not marker or MARKER in after:
        raise ValueError(f"a template must hold the line {MARKER} exactly once")
    return before + block + after


def fill(name: str, block: str) -> str:
    """The template `name` with its generated block."""
    return splice(read(name), block)
