"""Meta-World ML1 as a host-side task family (MuJoCo on the CPU, stepped from Python).

Meta-World's environments are numpy/MuJoCo, not JAX, so they cannot live inside a jitted
program. :class:`MetaWorldFamily` gives them the task-family interface the offline meta-RL
agents and ``seqrl eval-meta`` use (``split``, ``num_train`` / ``num_test``, spaces,
``episode_length``) plus a host loop, :meth:`MetaWorldFamily.rollout`, with the same contract as
:func:`seqrl.meta_eval.rollout`: the policy's ``act`` / ``observe`` are jitted JAX functions
over all lanes at once, and only the env steps run in Python (one MuJoCo env per lane, a
gymnasium-style batch stepped in turn).

Tasks: ``metaworld.ML1(env, seed=split_seed)`` draws 50 training and 50 test goals (disjoint);
the family keeps the first ``num_train`` training goals and the first ``num_test`` test goals
(REFERENCE.md: reach, 15 / 5, T = 500). As in Meta-World's ML benchmarks the goal is hidden
(observation[36:39] = 0). Global task index ``i`` is training goal ``i`` for ``i < num_train``,
else test goal ``i - num_train``.

The package's scripted policies (``metaworld.policies``) are the family's oracle and the data
source: :meth:`scripted_action` feeds them the true goal (they read it from the observation,
which ML1 hides), with Gaussian action noise for expert / medium data (:func:`collect_scripted`).
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqrl.envs.spaces import Box
from seqrl.errors import UserError

GOAL = slice(36, 39)  # where Meta-World puts the goal in an observation (zeros in ML1)
# scripted policies for the ML1 tasks we register
POLICIES = {
    "reach-v3": "SawyerReachV3Policy",
    "push-v3": "SawyerPushV3Policy",
    "pick-place-v3": "SawyerPickPlaceV3Policy",
}
# quality -> std of the Gaussian noise added to the scripted policy's action (then clipped)
NOISE = {"expert": 0.1, "medium": 1.0}


@struct.dataclass
class HostParams:
    """A stand-in for a JAX family's params (host families keep their tasks themselves)."""

    max_steps_in_episode: int = struct.field(pytree_node=False, default=500)


class MetaWorldFamily:
    """Meta-World ML1 ``env_name`` (``reach-v3``, ``push-v3``, ``pick-place-v3``) as a task
    family stepped on the host (see the module docstring)."""

    host = True  # meta_eval / the loop step it from Python, not inside a jitted program

    def __init__(
        self,
        env_name: str = "reach-v3",
        num_train: int = 15,
        num_test: int = 5,
        split_seed: int = 0,
        episode_length: int = 500,
    ):
        if env_name not in POLICIES:
            raise UserError(f"Meta-World ML1 task {env_name!r} is not one of {', '.join(POLICIES)}")
        counts = (num_train, num_test, episode_length)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
            raise UserError("Meta-World: num_train, num_test and episode_length must be integers")
        if not (1 <= num_train <= 50 and 0 <= num_test <= 50):
            raise UserError(
                f"Meta-World ML1 has 50 training and 50 test goals: num_train must be in "
                f"[1, 50] and num_test in [0, 50], got {num_train} / {num_test}"
            )
        if not 1 <= episode_length <= 500:
            raise UserError(f"Meta-World episodes last at most 500 steps, got {episode_length}")
        self.env_name = env_name
        self.num_train = num_train
        self.num_test = num_test
        self.split_seed = split_seed
        self.episode_length = episode_length
        self._benchmark = None
        self._envs: dict[int, list[Any]] = {}  # task -> idle env instances of that task

    @property
    def name(self) -> str:
        return f"meta/ML1-{self.env_name.removesuffix('-v3')}"

    # -- tasks ----------------------------------------------------------------------------------

    def _ml1(self):
        if self._benchmark is None:
            import metaworld

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._benchmark = metaworld.ML1(self.env_name, seed=self.split_seed)
        return self._benchmark

    def task(self, index: int):
        """The Meta-World ``Task`` of global task ``index``."""
        ml1 = self._ml1()
        if index < self.num_train:
            return ml1.train_tasks[index]
        return ml1.test_tasks[index - self.num_train]

    def split(self, name: str) -> jax.Array:
        """Global task indices of split ``name`` (``train``, ``test`` or ``all``)."""
        bounds = {
            "train": (0, self.num_train),
            "test": (self.num_train, self.num_train + self.num_test),
            "all": (0, self.num_train + self.num_test),
        }
        if name not in bounds:
            raise ValueError(f"split {name!r} is not one of {', '.join(bounds)}")
        return jnp.arange(*bounds[name], dtype=jnp.int32)

    @property
    def default_params(self) -> HostParams:
        return HostParams(self.episode_length)

    def observation_space(self, params=None) -> Box:
        return Box.make(-jnp.inf, jnp.inf, (39,))

    def action_space(self, params=None) -> Box:
        return Box.make(-1.0, 1.0, (4,))

    # -- envs -----------------------------------------------------------------------------------

    def _env(self, index: int):
        idle = self._envs.setdefault(index, [])
        if idle:
            return idle.pop()
        ml1 = self._ml1()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = ml1.train_classes[self.env_name]()
            env.set_task(self.task(index))
        return env

    def _release(self, tasks: np.ndarray, envs: list[Any]) -> None:
        for index, env in zip(tasks, envs):
            self._envs[int(index)].append(env)

    def scripted_action(self, env, obs: np.ndarray) -> np.ndarray:
        """The package's scripted policy, shown the goal that ML1 hides."""
        if not hasattr(self, "_policy"):
            import metaworld.policies as policies

            self._policy = getattr(policies, POLICIES[self.env_name])()
        full = np.array(obs, np.float64)
        full[GOAL] = env._target_pos
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high" on every call
            return np.asarray(self._policy.get_action(full), np.float32)

    def rollout(self, tasks, key, act, observe, carry, length: int | None = None):
        """One episode per lane (lane ``i`` runs global task ``tasks[i]``), ``length`` steps at
        most, on the host. ``act(carry, obs, t, key) -> (carry, action)`` and ``observe(carry,
        action, reward, next_obs) -> carry`` as in :func:`seqrl.meta_eval.rollout` (pass
        jitted ones); ``act`` may be ``"scripted"`` / ``("scripted", noise_std)`` for the
        scripted policy. Returns ``(carry, traj, returns)`` like it (arrays on the host)."""
        tasks = np.asarray(tasks)
        length = self.episode_length if length is None else min(length, self.episode_length)
        lanes = tasks.shape[0]
        envs = [self._env(int(t)) for t in tasks]
        seeds = np.asarray(jax.random.randint(key, (lanes,), 0, 2**31 - 1))
        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)])
        obs = obs.astype(np.float32)
        rec = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "valid", "success")}
        alive = np.ones(lanes, np.float32)
        rng = np.random.default_rng(seeds[0] if lanes else 0)
        try:
            for t in range(length):
                key, act_key = jax.random.split(key)
                if isinstance(act, str | tuple):
                    noise = act[1] if isinstance(act, tuple) else 0.0
                    action = np.stack([self.scripted_action(e, o) for e, o in zip(envs, obs)])
                    action = action + noise * rng.standard_normal(action.shape)
                    action = np.clip(action, -1.0, 1.0).astype(np.float32)
                else:
                    carry, action = act(carry, obs, t, act_key)
                    action = np.asarray(action, np.float32)
                next_obs = obs.copy()
                reward = np.zeros(lanes, np.float32)
                success = np.zeros(lanes, np.float32)
                valid = alive.copy()
                for i, env in enumerate(envs):
                    if not alive[i]:  # Meta-World raises when stepped past its time limit
                        continue
                    o, r, term, trunc, info = env.step(action[i])
                    next_obs[i], reward[i] = o, r
                    success[i] = float(info.get("success", 0.0))
                    alive[i] = 0.0 if (term or trunc) else 1.0
                if not isinstance(act, str | tuple):
                    carry = observe(carry, jnp.asarray(action), jnp.asarray(reward), next_obs)
                for name, x in (
                    ("obs", obs),
                    ("actions", action),
                    ("rewards", reward),
                    ("next_obs", next_obs),
                    ("valid", valid),
                    ("success", success),
                ):
                    rec[name].append(x)
                obs = next_obs
        finally:
            self._release(tasks, envs)
        traj = {k: np.stack(v, axis=1) for k, v in rec.items() if v}
        return carry, traj, traj["rewards"].sum(1)
