"""The CLI's argument parser: jsonargparse's, except that a bad option or config key is one line.

jsonargparse answers a misspelled key with the whole usage (dozens of lines) and a nested report of every
union member it tried. :class:`RobustParser` prints instead, for example::

    error: model.init_args.epss: PGDAT has no argument 'epss' (did you mean 'eps'?)

and exits with status 2 (``LIT_ROBUST_DEBUG=1`` shows jsonargparse's full report).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["RobustParser", "one_line", "DEBUG_ENV"]

DEBUG_ENV = "LIT_ROBUST_DEBUG"
_SKIP = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "Problem with given class_path")


def _class(path: str) -> type | None:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _arguments(cls: type) -> list[str]:
    """The constructor arguments of ``cls``, following ``**kwargs`` up the class hierarchy."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [
            p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_line(message: str, options: list[str] | None = None) -> str:
    """The one line a user needs from jsonargparse's error ``message``: the key, what is wrong, and the
    closest valid name. ``options`` are the parser's option strings (for unrecognised arguments)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    head = lines[0] if lines else message
    key = re.match(r'Parser key "([^"]+)"', head)
    where = key.group(1) if key else ""
    keys, owners = [], []  # the nesting that leads to a refused option: model -> train_attack -> ...
    for line in lines:
        if found := re.match(r'Parser key "([^"]+)"', line.lstrip("- ")):
            keys.append(found.group(1))
        elif found := re.search(r"Problem with given class_path '([^']+)'", line):
            owners.append(found.group(1))
        elif found := re.search(r"Option '([^']+)' is not accepted|Key \W?([\w.]+)\W? is not expected", line):
            option = found.group(1) or found.group(2)
            cls = _class(owners[-1]) if owners else None
            if cls is None:
                break
            name = option.split(".")[-1]
            field = ".init_args.".join([*keys, option])
            return f"{field}: {cls.__name__} has no argument {name!r}{_suggest(name, _arguments(cls))}"
    owner = owners[0] if owners else None
    unknown = re.search(r"unrecognized arguments: (?:fit |validate |test |evaluate )?(\S+)", message, re.I)
    if unknown:
        flag = unknown.group(1).split("=")[0]
        return f"unrecognized option {flag}{_suggest(flag, options or [])}"
    given = re.search(r"Given value: '?([\w.]+)'?", message)
    if where in ("model", "data") and given and owner is None:
        from lit_robust.registry import DATAMODULES, METHODS

        names = list(METHODS if where == "model" else DATAMODULES)
        return (
            f"--{where} {given.group(1)!r} is not one of {', '.join(names)}{_suggest(given.group(1), names)}"
        )
    details = [line.lstrip("- ") for line in lines[1:] if not line.startswith(_SKIP)]
    return ": ".join([head.rstrip(":"), *details[:1]]) if details else head


class RobustParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose errors are one line (see the module docstring)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get(DEBUG_ENV) == "1":
            super().error(message, ex)
        options = list(self._option_string_actions)
        parser = getattr(ex, "subcommand_parser", None)
        if parser is not None:
            options += list(parser._option_string_actions)
        sys.stderr.write(f"error: {one_line(message, options)}\n")
        raise SystemExit(2)
