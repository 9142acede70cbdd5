"""Config loading: types, ranges, overrides and one-line errors naming the key."""

from pathlib import Path

import pytest

from seqrl import config as cfg
from seqrl.errors import ConfigError, UserError

CARTPOLE = "configs/ppo/cartpole.yaml"


def test_loads_yaml_and_applies_dotted_overrides():
    c = cfg.load_config(CARTPOLE, ["ppo.lr=1e-3", "num_seeds=3", "network.hidden_sizes=[32, 16]"])
    assert c.ppo.lr == 1e-3 and c.num_seeds == 3 and c.network.hidden_sizes == (32, 16)
    assert c.ppo.gamma == 0.99  # untouched keys keep the YAML's values


def test_dict_overrides_nested_and_dotted():
    c = cfg.load_config(CARTPOLE, {"ppo": {"clip_eps": 0.1}, "loop.num_chunks": 5})
    assert c.ppo.clip_eps == 0.1 and c.loop.num_chunks == 5 and c.ppo.lr == 2.5e-4


def test_round_trip_through_dict():
    c = cfg.load_config(CARTPOLE)
    assert cfg.load_config(cfg.to_dict(c)) == c


def test_integer_written_in_scientific_notation():
    assert cfg.load_config(CARTPOLE, ["total_timesteps=5e5"]).total_timesteps == 500_000
    with pytest.raises(ConfigError, match="'total_timesteps': expected an integer"):
        cfg.load_config(CARTPOLE, ["total_timesteps=1.5"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("ppo.lrr=1", r"unknown config key 'ppo.lrr' \(did you mean 'ppo.lr'\?\)"),
        ("nope=1", r"unknown config key 'nope'; allowed: agent, env"),
        ("num_envs=abc", r"config key 'num_envs': expected an integer, got 'abc'"),
        ("num_envs=0", r"config key 'num_envs' must be >= 1, got 0"),
        ("ppo.gamma=1.5", r"config key 'ppo.gamma' must be <= 1, got 1.5"),
        ("ppo.anneal_lr=1", r"config key 'ppo.anneal_lr': expected a boolean"),
        ("network.activation=swish", r"'network.activation': expected one of 'tanh'"),
        ("network.hidden_sizes=64", r"'network.hidden_sizes': expected a list of integers"),
        ("ppo=3", r"config key 'ppo': expected a mapping"),
        ("ppo.lr.x=3", r"config key 'ppo.lr' is not a section"),
        ("ppo.lr=nan", r"'ppo.lr': must be a finite number"),
        ("agent=sac", r"unknown agent 'sac'; allowed: ppo"),
        ("env=gymnax/CartPol", r"config key 'env': unknown environment .*closest"),
        ("ppo.num_minibatches=3", r"'ppo.num_minibatches' \(3\) must divide"),
        ("total_timesteps=10", r"'total_timesteps' \(10\) must be at least"),
    ],
)
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        cfg.load_config(CARTPOLE, [override])
    assert "\n" not in str(info.value)


def test_override_needs_an_equals_sign():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        cfg.load_config(CARTPOLE, ["ppo.lr"])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        cfg.load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: ppo\n  env: [unclosed\n")
    with pytest.raises(UserError, match=r"not valid YAML \(line"):
        cfg.load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        cfg.load_config(listy)


def test_traced_fields_are_the_declared_hyperparameters():
    c = cfg.load_config(CARTPOLE)
    assert set(cfg.traced_fields(c.ppo)) == {
        "lr",
        "gamma",
        "gae_lambda",
        "clip_eps",
        "ent_coef",
        "vf_coef",
    }


def test_describe_lists_every_key_with_help():
    rows = cfg.describe(cfg.config_class("ppo"))
    keys = {r[0] for r in rows}
    assert {"seed", "num_seeds", "num_envs", "total_timesteps", "ppo.lr", "loop.num_chunks"} <= keys
    assert all(r[3] for r in rows), "every option documents itself"


def test_reference_docs_are_up_to_date():
    """docs/reference.md is generated from the CLI and config classes; regenerate it with
    `python -m seqrl.docs` when either changes."""
    from seqrl import docs

    assert docs.TARGET.read_text() == docs.render()


def test_base_configs_merge_and_loops_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("agent: ppo\nnum_envs: 8\nppo:\n  lr: 0.1\n  gamma: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nppo:\n  lr: 0.2\n")
    c = cfg.load_config(tmp_path / "b.yaml")
    assert (c.num_envs, c.ppo.lr, c.ppo.gamma) == (8, 0.2, 0.5)
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(UserError, match="loops back"):
        cfg.load_config(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(UserError, match="config file not found"):
        cfg.load_config(tmp_path / "e.yaml")


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("configs").rglob("*.yaml")))
def test_every_shipped_config_loads(path):
    c = cfg.load_config(path)
    budget = c.num_updates if c.agent == "ppo" else c.total_updates
    assert budget >= 1
