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

import time
from importlib.metadata import version

from benchmarks.common import (
    SOLVE_RETURNS,
    UpdateRow,
    peak_rss_mb,
    time_to_return,
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


def main() -> None:
    args = worker_parser(__doc__.splitlines()[0]).parse_args()
    t_import = time.perf_counter()
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    import_seconds = time.perf_counter() - t_import
    torch.set_num_threads(1)
    h = TASKS[args.task]
    lr, clip_range = h["lr"], h["clip_range"]

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

    t_start = time.perf_counter()
    env = make_vec_env(h["env"], n_envs=h["num_envs"], seed=args.seed)
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
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    logger = UpdateLogger(t_start)
    t_learn = time.perf_counter()
    model.learn(total_timesteps=args.total_steps, callback=logger)
    train_seconds = time.perf_counter() - t_learn
    total_steps = int(model.num_timesteps)

    eval_env = make_vec_env(h["env"], n_envs=h["num_envs"], seed=args.seed + 1_000_003)
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
    returns = np.asarray(returns, dtype=np.float64)
    net_arch = model.policy.net_arch
    write_result(
        args.out,
        {
            "peer": "sb3",
            "algorithm": f"stable_baselines3.PPO MlpPolicy, gymnasium {h['env']}, "
            + ("rl-zoo config" if args.task == "cartpole" else "seqrl's config"),
            "hyperparameters": {
                "num_envs": h["num_envs"],
                "num_steps": model.n_steps,
                "batch_size": model.batch_size,
                "update_epochs": model.n_epochs,
                "lr_start": lr,
                "lr_schedule": "linear to 0",
                "clip_range_start": clip_range,
                "clip_range_schedule": "linear to 0" if h["anneal_clip_range"] else "constant",
                "normalize_obs_and_reward": h["normalize"],
                "gamma": model.gamma,
                "gae_lambda": model.gae_lambda,
                "ent_coef": model.ent_coef,
                "vf_coef": model.vf_coef,
                "max_grad_norm": model.max_grad_norm,
                "net_arch": net_arch if isinstance(net_arch, list) else dict(net_arch),
                "activation": model.policy.activation_fn.__name__,
            },
            "env_steps": total_steps,
            "compile_seconds": 0.0,
            "setup_seconds": round(t_learn - t_start, 3),
            "train_seconds": round(train_seconds, 3),
            "env_steps_per_second": round(total_steps / max(train_seconds, 1e-9), 1),
            "final_return": float(returns.mean()),
            "final_return_std": float(returns.std()),
            "final_eval": f"{h['eval_episodes']} episodes, deterministic (policy mode)",
            "solve": time_to_return(logger.rows, SOLVE_RETURNS[args.task]),
            "import_seconds": round(import_seconds, 3),
            "peak_rss_mb": peak_rss_mb(),
            "versions": {
                pkg: version(pkg)
                for pkg in ("stable_baselines3", "torch", "gymnasium", "numpy")
                + (("mujoco",) if args.task != "cartpole" else ())
            },
            "threads": {
                "torch_intra_op_threads": torch.get_num_threads(),
                "torch_inter_op_threads": torch.get_num_interop_threads(),
            },
            "updates": logger.rows,
        },
    )


if __name__ == "__main__":
    main()
