"""seqrl: a JAX framework where sequence models make decisions.

import seqrl
result = seqrl.train("configs/ppo/cartpole.yaml", total_timesteps=100_000)
policy = seqrl.load(result.run_dir)
policy.evaluate(episodes=16)
"""

from seqrl.errors import ConfigError, UserError

__version__ = "0.1.0"


def train(config, **kwargs):
    """See :func:`seqrl.api.train`."""
    from seqrl.api import train as _train

    return _train(config, **kwargs)


def load(run_dir, step=None):
    """See :func:`seqrl.api.load`."""
    from seqrl.api import load as _load

    return _load(run_dir, step)


def collect(run_dir, episodes, output, **kwargs):
    """See :func:`seqrl.collection.collect`."""
    from seqrl.collection import collect as _collect

    return _collect(run_dir, episodes, output, **kwargs)


def load_dataset(path):
    """See :func:`seqrl.data.load_dataset`."""
    from seqrl.data import load_dataset as _load_dataset

    return _load_dataset(path)


__all__ = ["ConfigError", "UserError", "collect", "load", "load_dataset", "train"]
