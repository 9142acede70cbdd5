"""Stable-Baselines3 PPO on gymnasium CartPole-v1 (rl-zoo's hyperparameters) or, with
``--task inverted_pendulum``, on gymnasium's MuJoCo InvertedPendulum-v5 (seqrl's brax
inverted_pendulum hyperparameters).

Runs in ``.venv-sb3`` (torch CPU build, one intra-op thread). rl-zoo's ``ppo.yml`` entry for
CartPole-v1: 8 envs (DummyVecEnv + Monitor), n_steps 32, batch_size 256, gae_lambda 0.8,
gamma 0.98, n_epochs 20, ent_coef 0.0, learning rate and clip range linear from 1e-3 and 0.2,
1e5 steps, MlpPolicy (64x64 tanh, separate actor and critic). InvertedPendulum-v5 takes
``configs/ppo/brax/inverted_pendulum.yaml``'s: 32 envs x 64 steps, batch 512 (4 minibatches),
4 epochs, learning rate linear from 3e-4, constant clip 0.2, gamma 0.99, lambda 0.95, ent 0,
64x64 tanh, observations and rewards normalized by ``VecNormalize`` (the evaluation env reads
the training statistics, frozen, and scores raw rewards). A callback logs, per rollout (one PPO
update), the training episodes that ended in it; the clock starts before the model is built
(there is no compile) and is read at the end of every rollout's update.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from benchmarks.common import (
    UpdateRow,
    package_versions,
    ppo_result,
    timed_imports,
    torch_threads,
    worker_parser,
    write_result,
)

TASKS = {
    "cartpole": {
        "env": "CartPole-v1",
        "num_envs": 8,
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "lr": 1e-3,
        "clip_range": 0.2,
        "anneal_clip_range": True,
        "normalize": False,
        "eval_episodes": 64,
    },
    "inverted_pendulum": {
        "env": "InvertedPendulum-v5",
        "num_envs": 32,
        "n_steps": 64,
        "batch_size": 512,
        "gae_lambda": 0.95,
        "gamma": 0.99,
        "n_epochs": 4,
        "ent_coef": 0.0,
        "lr": 3e-4,
        "clip_range": 0.2,
        "anneal_clip_range": False,
        "normalize": True,
        "eval_episodes": 16,
    },
}


PACKAGES = ("stable_baselines3", "torch", "gymnasium", "numpy")


def import_libraries() -> None:
    """numpy, torch and Stable-Baselines3: imported once, on the import clock; the functions
    below import them again from the module cache."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    from stable_baselines3 import PPO  # noqa: F401
    from stable_baselines3.common.callbacks import BaseCallback  # noqa: F401
    from stable_baselines3.common.env_util import make_vec_env  # noqa: F401
    from stable_baselines3.common.evaluation import evaluate_policy  # noqa: F401
    from stable_baselines3.common.vec_env import VecNormalize  # noqa: F401


@functools.cache
def update_logger_class() -> type:
    """The SB3 callback that logs one :class:`UpdateRow` per rollout (defined once SB3 is
    imported)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class UpdateLogger(BaseCallback):
        """One :class:`UpdateRow` per rollout; SB3 trains on a rollout right after it ends, so
        a row is closed at the start of the next rollout (and once more after training)."""

        def __init__(self, t_start: float) -> None:
            super().__init__()
            self.t_start = t_start
            self.rows: list[UpdateRow] = []
            self.episodes = 0
            self.return_sum = 0.0
            self.rollout_steps: int | None = None

        def _close_row(self) -> None:
            if self.rollout_steps is None:
                return
            self.rows.append(
                UpdateRow(
                    env_steps=self.rollout_steps,
                    wall_seconds=time.perf_counter() - self.t_start,
                    episodes=self.episodes,
                    return_sum=self.return_sum,
                )
            )
            self.episodes, self.return_sum = 0, 0.0
            self.rollout_steps = None

        def _on_rollout_start(self) -> None:
            self._close_row()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                episode = info.get("episode")
                if episode is not None:
                    self.episodes += 1
                    self.return_sum += float(episode["r"])
            return True

        def _on_rollout_end(self) -> None:
            self.rollout_steps = self.num_timesteps

        def _on_training_end(self) -> None:
            self._close_row()

    return UpdateLogger


def make_model(h: dict, seed: int) -> tuple[Any, Any]:
    """``(model, env)``: SB3's PPO with the task's hyperparameters ``h`` on its vectorized
    training env (``VecNormalize`` around it when ``h`` normalizes)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    lr, clip_range = h["lr"], h["clip_range"]
    env = make_vec_env(h["env"], n_envs=h["num_envs"], seed=seed)
    if h["normalize"]:
        env = VecNormalize(env, gamma=h["gamma"])
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=h["n_steps"],
        batch_size=h["batch_size"],
        gae_lambda=h["gae_lambda"],
        gamma=h["gamma"],
        n_epochs=h["n_epochs"],
        ent_coef=h["ent_coef"],
        learning_rate=lambda progress_remaining: progress_remaining * lr,
        clip_range=(
            (lambda progress_remaining: progress_remaining * clip_range)
            if h["anneal_clip_range"]
            else clip_range
        ),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    return model, env


def final_returns(model: Any, env: Any, h: dict, seed: int) -> Any:
    """The returns of the final deterministic evaluation, on a fresh env (reading the training
    env's observation statistics, frozen, and scoring raw rewards when ``h`` normalizes)."""
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    eval_env = make_vec_env(h["env"], n_envs=h["num_envs"], seed=seed + 1_000_003)
    if h["normalize"]:
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False, gamma=h["gamma"])
        eval_env.obs_rms = env.obs_rms
    returns, _ = evaluate_policy(
        model,
        eval_env,
        n_eval_episodes=h["eval_episodes"],
        deterministic=True,
        return_episode_rewards=True,
    )
    return np.asarray(returns, dtype=np.float64)


def hyperparameters(model: Any, h: dict) -> dict:
    """What SB3 actually ran (its schedules described in words)."""
    net_arch = model.policy.net_arch
    return {
        "num_envs": h["num_envs"],
        "num_steps": model.n_steps,
        "batch_size": model.batch_size,
        "update_epochs": model.n_epochs,
        "lr_start": h["lr"],
        "lr_schedule": "linear to 0",
        "clip_range_start": h["clip_range"],
        "clip_range_schedule": "linear to 0" if h["anneal_clip_range"] else "constant",
        "normalize_obs_and_reward": h["normalize"],
        "gamma": model.gamma,
        "gae_lambda": model.gae_lambda,
        "ent_coef": model.ent_coef,
        "vf_coef": model.vf_coef,
        "max_grad_norm": model.max_grad_norm,
        "net_arch": net_arch if isinstance(net_arch, list) else dict(net_arch),
        "activation": model.policy.activation_fn.__name__,
    }


def main() -> None:
    args = worker_parser(__doc__.splitlines()[0]).parse_args()
    _, import_seconds = timed_imports(import_libraries)
    import torch

    torch.set_num_threads(1)
    h = TASKS[args.task]
    logger_class = update_logger_class()

    t_start = time.perf_counter()  # the solve clock: real seconds from here
    model, env = make_model(h, args.seed)
    logger = logger_class(t_start)
    t_learn = time.perf_counter()
    model.learn(total_timesteps=args.total_steps, callback=logger)
    train_seconds = time.perf_counter() - t_learn
    env_steps = int(model.num_timesteps)
    returns = final_returns(model, env, h, args.seed)

    about = {
        "peer": "sb3",
        "algorithm": f"stable_baselines3.PPO MlpPolicy, gymnasium {h['env']}, "
        + ("rl-zoo config" if args.task == "cartpole" else "seqrl's config"),
        "hyperparameters": hyperparameters(model, h),
    }
    result = ppo_result(
        about,
        {"compile_seconds": 0.0, "setup_seconds": round(t_learn - t_start, 3)},
        env_steps=env_steps,
        train_seconds=train_seconds,
        final_returns=(float(returns.mean()), float(returns.std())),
        eval_episodes=h["eval_episodes"],
        rows=logger.rows,
        task=args.task,
        import_seconds=import_seconds,
        versions=package_versions(PACKAGES + (("mujoco",) if args.task != "cartpole" else ())),
        threads=torch_threads(torch),
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
