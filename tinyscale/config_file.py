"""Config files and command-line overrides, in the ml_collections / big_vision style.

`--config sweeps/quickstart.py:smoke` imports the file and calls `get_config("smoke")`;
`--config.model.d_model=128` then overrides one knob, parsed to the knob's type.
"""

from __future__ import annotations

import ast
import importlib.util
import os

import ml_collections

from tinyscale import config as config_lib
from tinyscale.errors import TinyscaleError


def load_module(path: str):
    """Import a Python file as a module; user mistakes become TinyscaleErrors."""
    if not os.path.exists(path):
        raise TinyscaleError(f"config file {path} does not exist: check the --config path.")
    spec = importlib.util.spec_from_file_location(
        f"tinyscale_user_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise TinyscaleError(f"{path}:{error.lineno}: syntax error ({error.msg}): fix the "
                             "file.") from None
    return module


def load(spec: str | None) -> ml_collections.ConfigDict:
    """The config of `FILE[:ARG]`, or the defaults when spec is empty."""
    if not spec:
        return config_lib.get_config()
    path, _, arg = spec.partition(":")
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise TinyscaleError(f"{path} has no get_config(arg): define one that returns "
                             "a ConfigDict (start from tinyscale.config.get_config()).")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except TypeError:
        config = module.get_config(arg or None)
    return config


def _parse_value(text: str, current):
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if isinstance(current, str):
        return text
    value = ast.literal_eval(text)
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if type(value) is not type(current) and current is not None:
        raise ValueError(text)
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
    """Set `a.b.c` = value for each override, checking the key and the type."""
    for key, text in overrides.items():
        node, parts = config, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                known = ", ".join(sorted(node.keys())) if isinstance(
                    node, ml_collections.ConfigDict) else ""
                raise TinyscaleError(
                    f"unknown config key config.{'.'.join(parts[:i + 1])}: "
                    f"known keys here are {known}.")
            if i < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        try:
            node[parts[-1]] = _parse_value(text, current)
        except (ValueError, SyntaxError, TypeError):
            raise TinyscaleError(
                f"config.{key}={text!r} is not a {type(current).__name__}: give "
                f"--config.{key} a value like {current!r}.") from None


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separate `--config.KEY=VALUE` (or `--config.KEY VALUE`) from other arguments."""
    rest, overrides, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key, eq, value = arg[len("--config."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise TinyscaleError(f"{arg} needs a value: write {arg}=VALUE.")
                value, i = argv[i + 1], i + 1
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides
