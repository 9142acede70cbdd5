"""Prompt-DT (Xu et al., "Prompting Decision Transformer for Few-Shot Policy Generalization",
ICML 2022): a Decision Transformer conditioned on a short trajectory prompt, k steps of an
EXPERT demo of the task, prepended with their own embeddings.

Training draws a random length-k segment of an expert demo of the window's task (from
``prompt_dataset``, training tasks only); at test time the prompt is the last k steps of an
expert demo of the test task (``seqrl eval-meta --protocol prompt-dt``). The model, data
handling and evaluation are :mod:`seqrl.agents.meta_dt`'s with ``meta.context: false`` and
``meta.prompt: expert``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from seqrl.agents import meta_dt
from seqrl.config import ConfigError, option


@dataclasses.dataclass(frozen=True)
class Config(meta_dt.Config):
    """Prompt-DT training run."""

    agent: Literal["prompt_dt"] = option("prompt_dt", "the algorithm")
    meta: meta_dt.MetaConfig = option(
        meta_dt.MetaConfig(context=False, prompt="expert"),
        "task conditioning (Prompt-DT: no context, expert prompts)",
    )

    def validate(self) -> None:
        if self.meta.context or self.meta.prompt != "expert":
            raise ConfigError(
                "Prompt-DT uses expert prompts and no world-model context: keep "
                "meta.context=false and meta.prompt=expert (or use agent: meta_dt)"
            )
        super().validate()


make_trainer = meta_dt.make_trainer
make_train = meta_dt.make_train
