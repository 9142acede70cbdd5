"""Configs: YAML -> frozen dataclasses, dotted ``a.b=c`` overrides, validation with clear errors.

Every field is declared with :func:`option`, which carries its help text and allowed range, so
errors name the key and what is allowed, and the CLI reference is generated from the classes.
Agents declare their config class in their own file and register it in :data:`AGENTS`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from seqrl.errors import ConfigError, UserError

# agent name -> module exposing `Config` (a frozen dataclass) and `make_trainer(config)`
AGENTS = {
    "ppo": "seqrl.agents.ppo",
    "dt": "seqrl.agents.dt",
    "meta_dt": "seqrl.agents.meta_dt",
}
# former agents that are now presets of another: configs (and runs) that name them still load,
# as the agent they became with the preset's keys under their own
PRESETS = {"prompt_dt": ("meta_dt", {"meta": {"context": False, "prompt": "expert"}})}
# keys that moved: configs (and runs) written before still load, the value at its new place
MOVED = {"meta_dt": {"meta.target_return": "dt.target_return"}}


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    traced: bool = False,
) -> Any:
    """A config field with its documentation and bounds. ``traced`` marks hyperparameters that
    stay jax values inside ``train`` (so they can be vmapped), as opposed to static ones."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "traced": traced}
    if dataclasses.is_dataclass(default) or isinstance(default, dict):
        factory = (
            (lambda d=default: dataclasses.replace(d))
            if dataclasses.is_dataclass(default)
            else (lambda d=default: dict(d))
        )
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(elem, _type_name(elem))}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, "a mapping" if tp is dict else str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Checks ``value`` against the annotation ``tp``; returns the (converted) value."""

    def bad() -> ConfigError:
        return ConfigError(f"config key '{path}': expected {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return from_dict(tp, value, prefix=path + ".")
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise bad()
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                pass
        raise bad()
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad()
        (elem,) = typing.get_args(tp)[:1]
        return tuple(_coerce(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp in (int, float):
        if isinstance(value, str):  # "5e5" (YAML 1.1 reads it as a string)
            try:
                value = float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
    if tp is int:
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise bad()
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"config key '{path}': {value!r} does not fit in 64 bits")
        return int(value)
    if tp is float:
        if not math.isfinite(value):
            raise ConfigError(f"config key '{path}': must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in a Config class


def _check_range(value: Any, meta: dict, path: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    for key, ok, word in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"config key '{path}' must be {word} {bound}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Builds the frozen dataclass ``cls`` from a nested dict, validating every key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        path = prefix + name
        default = _default(fields[name])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a section given in part keeps the agent's defaults for the rest (which may differ
            # from the section class's own: Meta-DT's dt.target_return)
            value = _deep_merge(to_dict(default), value)
        kwargs[name] = _coerce(value, hints[name], path)
        _check_range(kwargs[name], dict(fields[name].metadata), path)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def to_dict(obj: Any) -> dict:
    """Plain YAML-ready dict (tuples become lists)."""

    def convert(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(dataclasses.asdict(obj))


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Merges ``["a.b=c", ...]`` (CLI) or ``{"a.b": c}`` / ``{"a": {"b": c}}`` into ``data``."""
    data = _deep_copy(data)
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for text in overrides:
            if "=" not in text:
                raise ConfigError(f"override {text!r} is not of the form key=value")
            key, _, value = text.partition("=")
            items.append((key.strip(), _parse_value(value)))
    for key, value in items:
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"override key {key!r} is not a dotted key like ppo.lr")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"config key '{'.'.join(parts[: i + 1])}' is not a section; cannot set '{key}'"
                )
            node = child
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
    return data


def _deep_copy(d: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise UserError(f"config file {path} cannot be read: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def _deep_merge(base: dict, update: dict) -> dict:
    out = _deep_copy(base)
    for k, v in update.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A YAML config as a dict; ``base: other.yaml`` (relative to the file) is loaded first and
    the file's keys are merged over it, so variants of a config state only what differs."""
    path = Path(path)
    data = read_yaml(path)
    if path.resolve() in _chain:
        raise UserError(f"config file {path}: its 'base' chain loops back to itself")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"config file {path}: 'base' must be a path to another YAML file")
    return _deep_merge(read_config_file(path.parent / base, (*_chain, path.resolve())), data)


def config_class(agent: Any) -> type:
    if not isinstance(agent, str) or agent not in AGENTS:
        raise ConfigError(
            f"config key 'agent': unknown agent {agent!r}; allowed: {', '.join(AGENTS)}"
        )
    return importlib.import_module(AGENTS[agent]).Config


def load_config(source: str | Path | dict | Any, overrides: list[str] | dict | None = None):
    """A validated config from a YAML path, a dict, or an existing config object."""
    if dataclasses.is_dataclass(source):
        data = to_dict(source)
    elif isinstance(source, dict):
        data = _deep_copy(source)
    else:
        data = read_config_file(source)
    data = apply_overrides(data, overrides or [])
    agent = data.get("agent", "ppo")
    if isinstance(agent, str) and agent in PRESETS:
        agent, preset = PRESETS[agent]
        data = _deep_merge(preset, {**data, "agent": agent})
    for old, new in MOVED.get(agent, {}).items() if isinstance(agent, str) else ():
        data = _move_key(data, old, new)
    return from_dict(config_class(agent), data)


def _move_key(data: dict, old: str, new: str) -> dict:
    """``data`` with the dotted key ``old`` (if set) moved to ``new``."""
    *path, leaf = old.split(".")
    node = data
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        return data
    value = node.pop(leaf)
    return apply_overrides(data, {new: value})


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every field, nested sections flattened (for docs)."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        # the defaults of this section where it sits (an agent may change a section's defaults)
        default = _default(f) if defaults is None else getattr(defaults, f.name)
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, prefix + f.name + ".", default)
            continue
        help_ = f.metadata.get("help", "")
        if f.metadata.get("traced"):
            help_ += " (traced: vmappable)"
        rows.append((prefix + f.name, _type_name(tp), default, help_))
    return rows


def traced_fields(obj: Any) -> dict[str, float]:
    """Fields marked ``traced=True``: hyperparameters kept as jax values inside ``train``."""
    return {
        f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.metadata.get("traced")
    }


def devices_option() -> Any:
    """The top-level ``devices`` key every agent's config has (see seqrl/distributed.py)."""
    return option(
        "all",
        "devices to train on: all, or the first N. The seeds are sharded across them when N "
        "divides num_seeds, else the agent's batch (PPO: num_envs; DT: dt.batch_size)",
        ge=1,
    )


# ---------------------------------------------------------------------------------------------
# Sections shared by agents
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The host loop around the jitted chunks of updates."""

    num_chunks: int = option(
        20,
        "host iterations: progress, logs and checkpoints happen between chunks",
        ge=1,
        le=1_000_000,
    )
    checkpoint_every: int = option(1, "save a checkpoint every N chunks (and at the end)", ge=1)
    keep_checkpoints: int = option(0, "how many checkpoints to keep; 0 keeps all", ge=0)
    eval_episodes: int = option(64, "episodes of the final evaluation, per seed", ge=1)
    eval_deterministic: bool = option(True, "evaluate with the policy's mode, not samples")
    eval_max_steps: int = option(100_000, "cap on evaluation steps per episode", ge=1)
    tensorboard: bool = option(True, "write TensorBoard event files")
    progress: bool = option(True, "show a progress bar")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The actor-critic network: an MLP, or a sequence model (GRU/LSTM/S5/S4D) torso shared by
    small actor and critic MLP heads."""

    backbone: Literal["mlp", "gru", "lstm", "s5", "s4d"] = option(
        "mlp", "torso: feed-forward MLP, or a recurrent sequence model"
    )
    hidden_sizes: tuple[int, ...] = option(
        (64, 64), "MLP widths (the torso for mlp; the actor/critic heads after a sequence model)"
    )
    activation: Literal["tanh", "relu", "gelu"] = option("tanh", "MLP activation")
    d_model: int = option(64, "width of the sequence model", ge=1)
    num_layers: int = option(1, "sequence layers in the stack", ge=1)
    state_size: int = option(64, "SSM state size (S5: P, S4D: N per channel)", ge=2)
    blocks: int = option(1, "S5: HiPPO blocks J (state_size / blocks must be even)", ge=1)
    discretization: Literal["zoh", "bilinear"] = option("zoh", "S5 discretization")
    clip_eigs: bool = option(False, "S5: clip Re(Lambda) <= -1e-4")
    s4d_init: Literal["lin", "inv"] = option("lin", "S4D initialization of Im(A)")
    norm: Literal["layer", "none"] = option("layer", "pre-normalization in the stack")
    glu: bool = option(True, "gated linear unit after each sequence layer")
    residual: bool = option(True, "residual connection around each sequence layer")
    head: Literal[
        "auto", "categorical", "gaussian", "tanh_gaussian", "deterministic", "fourier"
    ] = option("auto", "action head (auto: categorical for discrete, gaussian for continuous)")
    fourier_frequencies: int = option(8, "Fourier head: frequencies N", ge=1)
    fourier_bins: int = option(64, "Fourier head: bins per continuous action dimension", ge=2)
    action_order: tuple[int, ...] | None = option(
        None, "Fourier head, discrete actions: the actions in bin order (neighbours alike)"
    )

    @property
    def is_recurrent(self) -> bool:
        return self.backbone != "mlp"

    def validate(self) -> None:
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ConfigError(
                "config key 'network.hidden_sizes' must be a non-empty list of ints >= 1"
            )
        if self.backbone in ("s5", "s4d") and self.state_size % 2:
            raise ConfigError(f"config key 'network.state_size' must be even for {self.backbone}")
        if self.backbone == "s5" and (
            self.state_size % self.blocks or self.state_size // self.blocks % 2
        ):
            raise ConfigError(
                "config key 'network.blocks' must divide network.state_size into even blocks, "
                f"got state_size {self.state_size} and blocks {self.blocks}"
            )


@dataclasses.dataclass(frozen=True)
class WrapperConfig:
    """Wrappers applied around the vectorized environment."""

    normalize_obs: bool = option(False, "normalize observations with running statistics")
    normalize_reward: bool = option(False, "scale rewards by the std of the discounted return")
    clip_action: bool = option(True, "clip continuous actions into the action space")


def agent_module(agent: str):
    """The module implementing ``agent`` (``Config`` and ``make_trainer``)."""
    config_class(agent)  # validates the name
    return importlib.import_module(AGENTS[agent])


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def resolve_config(
    config: str | Path | dict | Any | None,
    overrides: list[str] | dict | None = None,
    resume: str | Path | None = None,
):
    """The config of a new run, or the saved config of the run being resumed.

    A resumed run keeps its config: passing a config or overrides that differ is an error.
    """
    if resume is None:
        if config is None:
            raise UserError("a config is required (a YAML path, a dict or a config object)")
        return load_config(config, overrides)
    saved_path = Path(resume) / "config.yaml"
    if not saved_path.is_file():
        raise UserError(f"{resume} is not a run directory (it holds no config.yaml)")
    saved = load_config(saved_path)
    if config is None and not overrides:
        return saved
    wanted = load_config(saved if config is None else config, overrides)
    a, b = _flatten(to_dict(saved)), _flatten(to_dict(wanted))
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if diff:
        raise UserError(
            f"cannot resume {resume} with a different config (differs at {', '.join(diff)}); "
            "a resumed run keeps its saved config"
        )
    return saved
