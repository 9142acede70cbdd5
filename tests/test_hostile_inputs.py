"""Hostile inputs, generated: every invalid config override or command line ends with exit code
2 and one line on stderr (never a traceback), and nothing is compiled or trained.

The invalid inputs are derived from the config classes themselves (unknown keys, values of the
wrong type, values outside the declared bounds) and from the argument parser (unknown flags,
bad option values, unknown commands, paths that do not exist). Runs are derandomized, so the
suite is reproducible; ``pytest tests/test_hostile_inputs.py --hypothesis-seed=N`` explores.
"""

import contextlib
import dataclasses
import io
import json
import math
import types
import typing
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import seqrl.runtime
from seqrl import config as cfg
from seqrl.cli import build_parser, main

CONFIGS = {
    "ppo": "configs/ppo/cartpole.yaml",
    "dt": "configs/dt/cartpole.yaml",
    "meta_dt": "configs/meta/point_robot/meta_dt.yaml",
}
CASES = 200  # generated cases per test
SETTINGS = settings(
    max_examples=CASES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class TrainingStarted(BaseException):
    """Raised if an invalid input got as far as compiling (a BaseException: nothing catches it)."""


@pytest.fixture(scope="module", autouse=True)
def no_compiles():
    def refuse(*args, **kwargs):
        raise TrainingStarted

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(seqrl.runtime, "lower", refuse)
        yield


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A scratch directory holding two run directories as training leaves them before its
    first checkpoint (config.yaml, metrics.jsonl): commands pointed at them get past "not a
    run directory", so only the value under test can be what they refuse."""
    root = tmp_path_factory.mktemp("hostile")
    for name, config in (("run-ppo", CONFIGS["ppo"]), ("run-meta", CONFIGS["meta_dt"])):
        (root / name).mkdir()
        resolved = yaml.safe_dump(cfg.to_dict(cfg.load_config(config)))
        (root / name / "config.yaml").write_text(resolved)
        (root / name / "metrics.jsonl").write_text('{"update": 1, "return_mean": 1.0}\n')
    return root


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _assert_rejected(argv: list[str], names: str | None = None) -> None:
    """Exit 2, one line, no traceback; ``names``: what the line must name (the bad key,
    option, flag or path), so that a refusal for some other reason does not pass."""
    code, err = _run(argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("seqrl: error: "), (argv, err)
    assert "Traceback" not in err
    if names is not None:
        assert names in err, (argv, names, err)


# ---------------------------------------------------------------------------------------------
# Configs: overrides derived from the config classes
# ---------------------------------------------------------------------------------------------


def _fields(cls: type, prefix: str = "") -> list[tuple[str, typing.Any, dict]]:
    """``(dotted key, annotation, metadata)`` of every field, sections included."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append((prefix + f.name, hints[f.name], dict(f.metadata)))
        if dataclasses.is_dataclass(hints[f.name]):
            out += _fields(hints[f.name], f"{prefix}{f.name}.")
    return out


FIELDS = {agent: _fields(cfg.config_class(agent)) for agent in CONFIGS}
SECTIONS = {
    agent: {"": {k for k, _, _ in fields if "." not in k}}
    | {
        key: {k[len(key) + 1 :] for k, _, _ in fields if k.startswith(key + ".")}
        for key, tp, _ in fields
        if dataclasses.is_dataclass(tp)
    }
    for agent, fields in FIELDS.items()
}


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


words = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
non_numeric_strings = words.filter(_not_a_number)
containers = st.one_of(st.lists(st.integers(), min_size=1, max_size=3), st.just({"a": 1}))


def _wrong_values(tp: typing.Any) -> st.SearchStrategy:
    """Values the annotation ``tp`` refuses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):  # a section: anything but a mapping
        return st.one_of(st.integers(), non_numeric_strings, st.lists(st.integers()))
    if origin is Literal:
        return st.one_of(words.filter(lambda w: w not in args), st.integers(), containers)
    if tp is bool:
        return st.one_of(st.integers(), st.floats(allow_nan=False), non_numeric_strings)
    if tp is int:
        fractions = st.floats(allow_nan=False, allow_infinity=False).filter(
            lambda x: not x.is_integer()
        )
        huge = st.integers(min_value=2**63, max_value=2**80)
        return st.one_of(st.booleans(), non_numeric_strings, containers, fractions, huge)
    if tp is float:
        return st.one_of(st.booleans(), non_numeric_strings, containers, st.just(math.nan))
    if tp is str:
        return st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), containers)
    if tp is dict:
        return st.one_of(st.integers(), non_numeric_strings, st.lists(st.integers()))
    if origin is tuple:
        return st.one_of(st.integers(), st.lists(non_numeric_strings, min_size=1, max_size=3))
    if origin in (types.UnionType, typing.Union) and type(None) not in args:  # 'all' | int
        allowed = {v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)}
        others = [_wrong_values(a) for a in args if typing.get_origin(a) is not Literal]
        return st.one_of(others).filter(lambda v: isinstance(v, list | dict) or v not in allowed)
    if type(None) in args:  # X | None: what X refuses, except null
        (inner,) = [a for a in args if a is not type(None)]
        return _wrong_values(inner).filter(lambda v: v is not None)
    raise AssertionError(f"no strategy for {tp!r}")


def _out_of_range(meta: dict, tp: typing.Any) -> st.SearchStrategy | None:
    """Numbers outside the field's declared bounds."""
    options = []
    step = 1 if tp is int else 1e-3
    for key in ("ge", "gt", "le", "lt"):
        bound = meta.get(key)
        if bound is None:
            continue
        if key in ("ge", "gt"):  # below (or at, for gt) the bound
            top = bound - step if key == "ge" else bound
            options.append(st.integers(-(10**9), math.floor(top)) if tp is int else st.just(top))
        else:  # above (or at, for lt) the bound
            low = bound + step if key == "le" else bound
            options.append(st.integers(math.ceil(low), 10**9) if tp is int else st.just(low))
    return st.one_of(options) if options else None


def _render(value: typing.Any) -> str:
    """As typed after ``key=`` (JSON is YAML: quoted strings stay strings)."""
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return json.dumps(value)


@st.composite
def invalid_overrides(draw) -> tuple[str, list[str]]:
    agent = draw(st.sampled_from(sorted(CONFIGS)))
    kind = draw(st.sampled_from(["unknown key", "wrong type", "out of range"]))
    if kind == "unknown key":
        section = draw(st.sampled_from(sorted(SECTIONS[agent])))
        name = draw(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
                lambda n, s=section: n not in SECTIONS[agent][s]
            )
        )
        key = f"{section}.{name}" if section else name
        value = draw(st.one_of(st.integers(), words, st.booleans()))
        return agent, [f"{key}={_render(value)}"]
    if kind == "wrong type":
        key, tp, _ = draw(st.sampled_from(FIELDS[agent]))
        return agent, [f"{key}={_render(draw(_wrong_values(tp)))}"]
    bounded = [(k, tp, m) for k, tp, m in FIELDS[agent] if _out_of_range(m, tp) is not None]
    key, tp, meta = draw(st.sampled_from(bounded))
    return agent, [f"{key}={_render(draw(_out_of_range(meta, tp)))}"]


@SETTINGS
@given(invalid_overrides())
@example(("ppo", ["agent=[1]"]))
@example(("ppo", ["seed=100000000000000000000"]))
@example(("ppo", ["network.backbone=s5", "network.blocks=100"]))
@example(("ppo", ["total_timesteps=1e30"]))
def test_invalid_configs_are_one_line_exit_2(scratch, case):
    agent, overrides = case
    key = overrides[-1].split("=", 1)[0]
    # the line names the key (an unknown one) or its section's known part
    known = key if key in {k for k, _, _ in FIELDS[agent]} else None
    argv = ["train", CONFIGS[agent], *overrides, "--run-dir", str(scratch / "run")]
    _assert_rejected(argv, f"'{known}" if known else None)  # also 'key[0]'


@st.composite
def invalid_config_files(draw) -> bytes:
    """Config files that must be refused: not UTF-8, not YAML, not a mapping, an unknown key,
    a broken ``base``."""
    valid = Path(CONFIGS["ppo"]).read_text()
    kind = draw(st.sampled_from(["bytes", "syntax", "not a mapping", "unknown key", "base"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40)) + b"\xff" + draw(st.binary(max_size=40))
    if kind == "syntax":  # a flow sequence that never closes
        return ("[" + draw(words.filter(lambda w: "]" not in w))).encode()
    if kind == "not a mapping":
        value = draw(st.one_of(st.integers(), non_numeric_strings.filter(bool), containers))
        return json.dumps(value if not isinstance(value, dict) else [value]).encode()
    if kind == "unknown key":
        name = draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
        if name in SECTIONS["ppo"][""]:
            name += "_x"
        return f"{valid}\n{name}: {_render(draw(st.integers()))}\n".encode()
    base = draw(st.sampled_from(["no/such/base.yaml", "5", "[a]", "hostile.yaml"]))
    return f"base: {base}\n{valid}".encode()


@SETTINGS
@given(invalid_config_files())
def test_invalid_config_files_are_one_line_exit_2(scratch, content):
    path = scratch / "hostile.yaml"  # "base: hostile.yaml" loops back to itself
    path.write_bytes(content)
    _assert_rejected(["train", str(path), "--run-dir", str(scratch / "run")])


# ---------------------------------------------------------------------------------------------
# Command lines: derived from the argument parser
# ---------------------------------------------------------------------------------------------

PARSERS = {
    name: p
    for action in build_parser()._actions
    if hasattr(action, "choices") and isinstance(action.choices, dict)
    for name, p in action.choices.items()
}
MISSING = "no/such/dir"  # relative to the repository root, which holds no `no/`


def _options(command: str) -> list[str]:
    return [o for a in PARSERS[command]._actions for o in a.option_strings]


def _base_argv(command: str, scratch: Path) -> list[str]:
    """A complete command line naming a run directory that exists (it still fails later, for
    want of a checkpoint): every required option is given."""
    ppo, meta = str(scratch / "run-ppo"), str(scratch / "run-meta")
    return {
        "train": ["train", CONFIGS["ppo"], "--run-dir", str(scratch / "run")],
        "eval": ["eval", ppo],
        "collect": ["collect", ppo, "--episodes", "1", "-o", str(scratch / "d-v0")],
        "plot": ["plot", ppo, "-o", str(scratch / "p.png")],
        "eval-meta": ["eval-meta", meta, "--mode", "zero-shot"],
        "envs": ["envs"],
    }.get(command, [command, MISSING])


@st.composite
def garbage_flags(draw) -> tuple[str, str]:
    command = draw(st.sampled_from(sorted(PARSERS)))
    known = _options(command) + ["--help", "--version"]
    flag = draw(
        st.one_of(
            st.from_regex(r"--[A-Za-z0-9][-A-Za-z0-9_=.]{0,14}", fullmatch=True),
            st.from_regex(r"-[A-Za-z]", fullmatch=True),
        ).filter(lambda f: not any(k.startswith(f.split("=")[0]) for k in known))
    )
    return command, flag


bad_counts = st.one_of(st.integers(max_value=0).map(str), non_numeric_strings)
bad_ints = non_numeric_strings.filter(lambda s: not s.strip().lstrip("+-").isdigit())
bad_noise = st.one_of(
    st.floats(max_value=-1e-9).map(str), st.sampled_from(["inf", "nan", "-inf"]), bad_ints
)


@st.composite
def bad_command_lines(draw, scratch: Path) -> tuple[list[str], str | None]:
    """``(argv, what the error line must name)``."""
    kind = draw(
        st.sampled_from(
            ["flag", "option value", "missing path", "command", "stray argument", "nul"]
        )
    )
    if kind == "flag":
        command, flag = draw(garbage_flags())
        argv = _base_argv(command, scratch)
        argv = argv[:1] + [flag] + argv[1:] if draw(st.booleans()) else argv + [flag]
        return argv, flag
    if kind == "option value":
        option, value = draw(
            st.one_of(
                st.tuples(st.just(("eval", "--episodes")), bad_counts),
                st.tuples(st.just(("eval", "--seed")), bad_ints),
                st.tuples(st.just(("eval", "--target-return")), non_numeric_strings),
                st.tuples(st.just(("collect", "--episodes")), bad_counts),
                st.tuples(st.just(("collect", "--noise")), bad_noise),
                st.tuples(st.just(("collect", "--max-steps")), bad_counts),
                st.tuples(st.just(("collect", "--checkpoint")), bad_ints),
                st.tuples(st.just(("collect", "--seed")), bad_ints),
                st.tuples(
                    st.just(("collect", "--quality")),
                    words.filter(lambda w: w not in ("expert", "medium", "mixed")),
                ),
                st.tuples(
                    st.just(("eval-meta", "--mode")),
                    words.filter(lambda w: w not in ("zero-shot", "few-shot")),
                ),
                st.tuples(
                    st.just(("eval-meta", "--split")),
                    words.filter(lambda w: w not in ("test", "train")),
                ),
                st.tuples(
                    st.just(("eval-meta", "--protocol")),
                    words.filter(lambda w: w not in ("meta-dt", "prompt-dt", "in-context")),
                ),
                st.tuples(st.just(("eval-meta", "--rounds")), bad_counts),
                st.tuples(st.just(("eval-meta", "--seed")), bad_ints),
            )
        )
        command, name = option
        return _base_argv(command, scratch) + [f"{name}={value}"], f"argument {name}"
    if kind == "missing path":
        leaf = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True))
        path = f"{MISSING}/{leaf}"
        argv = draw(
            st.sampled_from(
                [
                    ["train", path],
                    ["train", path + ".yaml", "seed=1"],
                    ["train", "--resume", path],
                    ["train", CONFIGS["dt"], f"dataset={path}", "--run-dir", str(scratch / "r")],
                    ["eval", path],
                    ["eval-meta", path, "--mode", "few-shot"],
                    ["collect", path, "--episodes", "1", "-o", str(scratch / "d-v0")],
                    ["plot", path, "-o", str(scratch / "p.png")],
                ]
            )
        )
        return argv, path
    if kind == "command":
        word = draw(
            st.from_regex(r"[A-Za-z0-9][-A-Za-z0-9_]{0,12}", fullmatch=True).filter(
                lambda w: w not in PARSERS
            )
        )
        return [word, *draw(st.lists(words, max_size=2))], f"invalid choice: '{word}'"
    if kind == "stray argument":  # train items after CONFIG must be key=value
        junk = draw(words.filter(lambda w: "=" not in w and not w.startswith("-") and w))
        return _base_argv("train", scratch) + [junk], None
    argv = _base_argv(draw(st.sampled_from(sorted(PARSERS))), scratch)
    at = draw(st.integers(0, len(argv) - 1))
    return argv[:at] + [argv[at] + "\x00"] + argv[at + 1 :], None


@SETTINGS
@given(data=st.data())
def test_invalid_command_lines_are_one_line_exit_2(scratch, data):
    argv, names = data.draw(bad_command_lines(scratch))
    _assert_rejected(argv, names)


def test_line_breaks_in_arguments_stay_on_one_line(scratch):
    """Found by the test above: argparse quotes unknown arguments verbatim."""
    _assert_rejected(_base_argv("train", scratch) + ["a\nb", "\u2028"])


def test_the_generated_cases_cover_every_command_and_config_key():
    """The strategies above must reach every subcommand and every config field."""
    assert set(PARSERS) >= {"train", "eval", "collect", "plot", "envs"}
    for agent, fields in FIELDS.items():
        for _, tp, _ in fields:
            _wrong_values(tp)  # raises for an annotation the strategies do not know
        assert any(_out_of_range(m, tp) is not None for _, tp, m in fields), agent
