"""Option types the commands share: numbers that must be finite as well as in range.

click's ``FloatRange`` lets ``nan`` through (every comparison with it is false) and ``inf``
through any open-ended range; :class:`FiniteFloat` refuses both with click's usual message.
"""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.FloatRange):
    """A ``FloatRange`` that also refuses NaN and infinity."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: a temperature, a learning rate: finite and above zero
FINITE_POSITIVE = FiniteFloat(min=0.0, min_open=True)


class OutputFile(click.ParamType):
    """A file the command will write: not a directory, its folder made if missing and
    writable; checked before any work is done, so a bad path costs nothing."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        import os
        from pathlib import Path

        path = Path(value).expanduser()
        if path.is_dir():
            self.fail(
                f"{value} is a directory; name a file in it, e.g. {path / 'out.png'}", param, ctx
            )
        if path.parent.exists() and not path.parent.is_dir():
            self.fail(f"{path.parent} is a file, not a folder to write {path.name} in", param, ctx)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.fail(f"cannot create its folder {path.parent}: {exc.strerror}", param, ctx)
        if not os.access(path.parent, os.W_OK):
            self.fail(f"its folder {path.parent} is not writable", param, ctx)
        return path
