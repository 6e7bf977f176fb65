"""`--config FILE`: a study's options in a TOML grid file instead of a long command line.

The file's keys are the command's option names (snake_case or dashed); its values become click's
`default_map` (https://click.palletsprojects.com/en/stable/commands/#context-defaults), so an
option given on the command line wins, and every value then goes through the same conversion and
the same checks (`common.checked_request`, `launch_options`, `tune_request`) as the flag would.
Here only the file's shape is checked: unknown keys and TOML types that fit no option.
"""

from __future__ import annotations

import difflib
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer

from bench.cli.common import fail
from bench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Comma-separated options a list may give too: methods = ["fpt", "vpt"] is methods = "fpt,vpt".
LIST_OPTIONS = {"methods", "datasets", "seeds", "shots", "split_seeds", "gpus"}
# Repeatable METHOD.KEY=VALUE options a table may give too: set = {vpt = {prompt_length = 10}}.
METHOD_TABLES = {"set", "space"}
# Options that make no sense in a file: the file itself, and what a command line is for.
_NOT_KEYS = {"config", "help", "install_completion", "show_completion"}


def load_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """Eager callback of --config: the file's values become the command's defaults."""
    if value is None:
        return None
    try:
        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx.command)}
    except UserError as exc:
        fail(str(exc))
    return value


def read_config(path: Path, command: Any) -> dict[str, Any]:
    """The file's values keyed by the command's parameter names, as the command line would give
    them (strings for comma lists, METHOD.KEY=VALUE strings, paths resolved against the file)."""
    where = f"config file {path}"
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{where}: {exc}; give a readable TOML file") from None
    options = option_keys(command)
    hints = typing.get_type_hints(inspect.unwrap(command.callback))
    out: dict[str, Any] = {}
    for given, value in raw.items():
        key = given.replace("-", "_")
        if key not in options:
            close = difflib.get_close_matches(key, options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"{where}: unknown key {given!r}{hint}; valid keys: {', '.join(sorted(options))}"
            )
        name = options[key]
        out[name] = _value(key, value, hints[name], where, Path(path).parent)
    return out


def option_keys(command: Any) -> dict[str, str]:
    """File key (the long option without dashes, in snake_case) -> the parameter's name."""
    keys = {}
    for param in command.params:
        for opt in getattr(param, "opts", ()):
            key = opt.lstrip("-").replace("-", "_")
            if opt.startswith("--") and key not in _NOT_KEYS:
                keys[key] = param.name
    return keys


def _value(key: str, value: Any, hint: Any, where: str, base: Path) -> Any:
    """One file value checked against its option's annotation and put in command-line form."""
    kind = _strip_none(hint)
    if kind is bool:
        ok, expected = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, expected = _integer(value), "an integer"
    elif kind is float:
        ok, expected = _integer(value) or isinstance(value, float), "a number"
    elif typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        ok, expected = value in choices, f"one of {', '.join(map(repr, choices))}"
    elif kind is Path:
        ok, expected = isinstance(value, str), "a path (a string; relative to this file)"
        if ok:
            return _resolve(value, base)
    elif key in METHOD_TABLES:
        expected = 'a list of "METHOD.KEY=VALUE" strings or a table {METHOD = {KEY = VALUE}}'
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            value = _method_table(value)
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif key in LIST_OPTIONS:
        items = value if isinstance(value, list) else [value]
        ok = all(isinstance(v, str) or _integer(v) for v in items)
        expected = "a list, or a comma-separated string"
        value = ",".join(map(str, items))
    else:
        ok, expected = isinstance(value, str), "a string"
        if ok and key == "protocol" and value.endswith(".toml"):
            return str(_resolve(value, base))
    if not ok:
        raise UserError(
            f"{where}: {key} must be {expected}, got {type(value).__name__} {value!r:.60}"
        )
    return value


def _strip_none(hint: Any) -> Any:
    """`X | None` -> X; other annotations as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolve(value: str, base: Path) -> Path:
    """A path in the file is relative to the file, not to where the command runs."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _method_table(table: dict[str, dict[str, Any]]) -> list[str]:
    """{vpt = {prompt_length = 10}} -> ["vpt.prompt_length=10"]; a list value is comma-joined
    (the --space form: {vpt = {prompt_length = [1, 10]}})."""
    out = []
    for method, values in table.items():
        for k, v in values.items():
            items = v if isinstance(v, list) else [v]
            out.append(f"{method}.{k}=" + ",".join(_text(i) for i in items))
    return out


def _text(value: Any) -> str:
    """A TOML scalar as the command line writes it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
