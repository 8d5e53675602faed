"""Config files and command-line overrides, in the ml_collections / big_vision style.

`--config sweeps/quickstart.py:smoke` imports the file and calls `get_config("smoke")`;
`--config.model.d_model=128` then overrides one knob, parsed to the knob's type.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import traceback

import ml_collections

from tinyscale import config as config_lib
from tinyscale.config import check as config_check
from tinyscale.errors import TinyscaleError


def load_module(path: str):
    """Import a Python file as a module; user mistakes become TinyscaleErrors."""
    if not os.path.exists(path):
        raise TinyscaleError(f"config file {path} does not exist: check the --config path.")
    spec = importlib.util.spec_from_file_location(
        f"tinyscale_user_{abs(hash(os.path.abspath(path)))}", path)
    if os.path.isdir(path):
        raise TinyscaleError(f"{path} is a folder: give the config file (a .py file).")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise TinyscaleError(f"{path}:{error.lineno}: syntax error ({error.msg}): fix the "
                             "file.") from None
    except TinyscaleError as error:
        raise TinyscaleError(f"{path}: {error}") from None
    except Exception as error:  # the user's module failed to import: say where and why
        raise TinyscaleError(f"{path} failed to load: {_describe(error)}: fix the file.") \
            from None
    return module


def _describe(error: BaseException) -> str:
    """'NameError: name 'x' is not defined (line 7)' — the error and the user's line."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(os.path.dirname(__file__))]
    line = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}{line}"


def call_user(path: str, name: str, function, arg: str):
    """Call `get_config` / `sweep` of a config file with its ':ARG' (when it takes one);
    anything it raises becomes one line naming the file."""
    takes_arg = bool(inspect.signature(function).parameters)
    if arg and not takes_arg:
        raise TinyscaleError(f"{path}: {name}() takes no variant, but ':{arg}' was given: "
                             f"drop ':{arg}'.")
    try:
        return function(arg) if takes_arg else function()
    except TinyscaleError as error:
        raise TinyscaleError(f"{path}: {error}") from None
    except Exception as error:
        raise TinyscaleError(f"{path}: {name}({arg!r}) raised {_describe(error)}: fix the "
                             "file or the variant after ':'.") from None


def variant(arg: str, *known: str) -> str:
    """For config files: `arg` if it is one of the known variants ('' always is)."""
    if arg and arg not in known:
        raise TinyscaleError(f"unknown variant {arg!r}: use one of {', '.join(known)} after "
                             "':' (or none).")
    return arg


def load(spec: str | None) -> ml_collections.ConfigDict:
    """The config of `FILE[:ARG]`, or the defaults when spec is empty."""
    if not spec:
        return config_lib.get_config()
    path, _, arg = spec.partition(":")
    module = load_module(path)
    if not callable(getattr(module, "get_config", None)):
        raise TinyscaleError(f"{path} has no get_config(arg): define one that returns "
                             "a ConfigDict (start from tinyscale.config.get_config()).")
    config = call_user(path, "get_config", module.get_config, arg)
    if not isinstance(config, ml_collections.ConfigDict):
        raise TinyscaleError(f"{path}: get_config() returned {type(config).__name__}, not a "
                             "ConfigDict: return the config (start from "
                             "tinyscale.config.get_config()).")
    return config


def resolve(spec: str | None, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """The validated config of `FILE[:ARG]` with `--config.KEY=VALUE` overrides applied:
    where a config made from user input is checked (plan.expand does it for sweeps)."""
    config = load(spec)
    apply_overrides(config, overrides)
    return config_check.validate(config)


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
    if isinstance(current, tuple):  # a list knob: (1, 2), [1, 2] or one value
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if type(value) is not type(current) and current is not None:
        raise ValueError(text)
    return value


def _parent(config, key: str):
    """(the node holding `key`'s last part, that part); unknown keys are one line."""
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict | ml_collections.ConfigDict) or part not in node:
            known = ", ".join(sorted(node.keys())) if isinstance(
                node, dict | ml_collections.ConfigDict) else ""
            raise TinyscaleError(f"unknown config key config.{'.'.join(parts[:i + 1])}: "
                                 f"known keys here are {known}.")
        if i < len(parts) - 1:
            node = node[part]
    if isinstance(node[parts[-1]], dict | ml_collections.ConfigDict):
        raise TinyscaleError(f"config.{key} is a section, not a knob: set one of its keys "
                             f"({', '.join(sorted(node[parts[-1]].keys()))}).")
    return node, parts[-1]


def _set(config, key: str, parse, shown) -> None:
    node, last = _parent(config, key)
    current = node[last]
    if _loose(node, last):  # a knob of several types (launch.pack: 4 or "auto")
        try:
            node[last] = parse(None)
        except (ValueError, SyntaxError, TypeError):
            node[last] = shown
        return
    try:
        node[last] = parse(current)
    except (ValueError, SyntaxError, TypeError):
        raise TinyscaleError(
            f"config.{key}={shown!r} is not a {type(current).__name__}: give "
            f"config.{key} a value like {current!r}.") from None


def _loose(node, key: str) -> bool:
    """True for a knob declared with field_type=object: it takes any type."""
    try:
        return node.get_ref(key).get_type() is object
    except (AttributeError, KeyError, TypeError):
        return False


def apply_overrides(config, overrides: dict[str, str]) -> None:
    """Set `a.b.c` = the parsed text for each override, checking the key and the type."""
    for key, text in overrides.items():
        _set(config, key, lambda current, text=text: _parse_value(text, current), text)


def set_value(config, key: str, value) -> None:
    """Set `a.b.c` = a Python value (a sweep's override), checking the key and the type;
    a string for a non-string knob is parsed as on the command line."""
    def check(current):
        if isinstance(value, str):
            return _parse_value(value, current)
        if isinstance(current, bool) or isinstance(value, bool):
            if type(value) is not type(current):
                raise TypeError(value)
            return value
        if isinstance(current, float) and isinstance(value, int):
            return float(value)
        if isinstance(current, tuple) and isinstance(value, list):
            return tuple(value)
        if current is not None and type(value) is not type(current):
            raise TypeError(value)
        return value
    _set(config, key, check, value)


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
