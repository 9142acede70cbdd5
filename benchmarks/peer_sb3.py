"""Stable-Baselines3 PPO on gymnasium CartPole-v1 with the rl-zoo hyperparameters.

Runs in ``.venv-sb3`` (torch CPU build, one intra-op thread). rl-zoo's ``ppo.yml`` entry for
CartPole-v1: 8 envs (DummyVecEnv + Monitor), n_steps 32, batch_size 256, gae_lambda 0.8,
gamma 0.98, n_epochs 20, ent_coef 0.0, learning rate and clip range linear from 1e-3 and 0.2,
1e5 steps, MlpPolicy (64x64 tanh, separate actor and critic). A callback logs, per rollout
(one PPO update), the training episodes that ended in it; the clock starts before the model is
built (there is no compile) and is read at the end of every rollout's update.
"""

from __future__ import annotations

import time
from importlib.metadata import version

from benchmarks.common import UpdateRow, peak_rss_mb, time_to_return, worker_parser, write_result

NUM_ENVS = 8
N_STEPS = 32
BATCH_SIZE = 256
GAE_LAMBDA = 0.8
GAMMA = 0.98
N_EPOCHS = 20
ENT_COEF = 0.0
LR = 1e-3
CLIP_RANGE = 0.2
EVAL_EPISODES = 64


def main() -> None:
    args = worker_parser(__doc__.splitlines()[0]).parse_args()
    t_import = time.perf_counter()
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    import_seconds = time.perf_counter() - t_import
    torch.set_num_threads(1)

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
    env = make_vec_env("CartPole-v1", n_envs=NUM_ENVS, seed=args.seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=N_STEPS,
        batch_size=BATCH_SIZE,
        gae_lambda=GAE_LAMBDA,
        gamma=GAMMA,
        n_epochs=N_EPOCHS,
        ent_coef=ENT_COEF,
        learning_rate=lambda progress_remaining: progress_remaining * LR,
        clip_range=lambda progress_remaining: progress_remaining * CLIP_RANGE,
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    logger = UpdateLogger(t_start)
    t_learn = time.perf_counter()
    model.learn(total_timesteps=args.total_steps, callback=logger)
    train_seconds = time.perf_counter() - t_learn
    total_steps = int(model.num_timesteps)

    eval_env = make_vec_env("CartPole-v1", n_envs=NUM_ENVS, seed=args.seed + 1_000_003)
    returns, _ = evaluate_policy(
        model,
        eval_env,
        n_eval_episodes=EVAL_EPISODES,
        deterministic=True,
        return_episode_rewards=True,
    )
    returns = np.asarray(returns, dtype=np.float64)
    net_arch = model.policy.net_arch
    write_result(
        args.out,
        {
            "peer": "sb3",
            "algorithm": "stable_baselines3.PPO MlpPolicy, gymnasium CartPole-v1, rl-zoo config",
            "hyperparameters": {
                "num_envs": NUM_ENVS,
                "num_steps": model.n_steps,
                "batch_size": model.batch_size,
                "update_epochs": model.n_epochs,
                "lr_start": LR,
                "lr_schedule": "linear to 0",
                "clip_range_start": CLIP_RANGE,
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
            "final_eval": f"{EVAL_EPISODES} episodes, deterministic (policy mode)",
            "solve": time_to_return(logger.rows),
            "import_seconds": round(import_seconds, 3),
            "peak_rss_mb": peak_rss_mb(),
            "versions": {
                pkg: version(pkg) for pkg in ("stable_baselines3", "torch", "gymnasium", "numpy")
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
