"""Meta-World ML1 / ML10 / ML45 as host-side task families (MuJoCo on the CPU, stepped from
Python).

Meta-World's environments are numpy/MuJoCo, not JAX, so they cannot live inside a jitted
program. :class:`MetaWorldFamily` gives them the task-family interface the offline meta-RL
agents and ``seqrl eval-meta`` use (``split``, ``num_train`` / ``num_test``, spaces,
``episode_length``) plus a host loop, :meth:`MetaWorldFamily.rollout`, with the same contract as
:func:`seqrl.evaluate.lane_rollout`: the policy's ``act`` / ``observe`` are jitted JAX functions
over all lanes at once, and only the env steps run in Python (one MuJoCo env per lane, a
gymnasium-style batch stepped in turn).

Tasks: ``metaworld.ML1(env, seed=split_seed)`` draws 50 training and 50 test goals (disjoint);
the family keeps the first ``num_train`` training goals and the first ``num_test`` test goals
(as in the Meta-DT paper: reach, 15 / 5, T = 500). ML10 / ML45 keep ``tasks_per_class``
goals of every training class and of every held-out class. As in Meta-World's ML benchmarks the
goal is hidden (observation[36:39] = 0). Global task index ``i`` is a training task for
``i < num_train``, else a test task.

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

GOAL = slice(36, 39)  # where Meta-World puts the goal in an observation (zeros in ML envs)
ML1_TASKS = ("reach-v3", "push-v3", "pick-place-v3")  # the ML1 tasks registered
BENCHMARKS = ("ML1", "ML10", "ML45")
# quality -> std of the Gaussian noise added to the scripted policy's action (then clipped)
NOISE = {"expert": 0.1, "medium": 1.0}
# Process-wide, shared by every family object: building a benchmark samples its goals (ML1 ~1 s,
# ML10 ~35 s) and building an env compiles its MuJoCo model (~0.35 s), while collect, train and
# eval-meta each open the family anew. Benchmarks are keyed by what draws them; idle envs by
# their task (class name and Meta-World's task data), so an env is only ever reused for the
# exact task it was set to, and one in use is out of the pool until it is released.
_BENCHMARKS: dict[tuple, Any] = {}
_IDLE: dict[tuple, list[Any]] = {}


@struct.dataclass
class HostParams:
    """A stand-in for a JAX family's params (host families keep their tasks themselves)."""

    max_steps_in_episode: int = struct.field(pytree_node=False, default=500)


def _is_int(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


class MetaWorldFamily:
    """A Meta-World ML benchmark as a task family stepped on the host (module docstring).

    ``benchmark="ML1"``: one task ``env_name`` (``reach-v3``, ``push-v3``, ``pick-place-v3``),
    ``num_train`` of its training goals and ``num_test`` of its test goals. ``"ML10"`` /
    ``"ML45"``: every training class (10 / 45) and every test class (5) of the benchmark,
    ``tasks_per_class`` goals each (so a held-out task is a held-out *kind* of manipulation).
    Building ML10 takes ~35 s and ML45 ~7 min on this CPU (Meta-World samples its goals).
    """

    host = True  # meta_eval / the loop step it from Python, not inside a jitted program

    def __init__(
        self,
        env_name: str = "reach-v3",
        num_train: int = 15,
        num_test: int = 5,
        split_seed: int = 0,
        episode_length: int = 500,
        benchmark: str = "ML1",
        tasks_per_class: int = 2,
    ):
        if benchmark not in BENCHMARKS:
            raise UserError(f"Meta-World benchmark {benchmark!r} is not one of {BENCHMARKS}")
        if benchmark == "ML1" and env_name not in ML1_TASKS:
            raise UserError(
                f"Meta-World ML1 task {env_name!r} is not one of {', '.join(ML1_TASKS)}"
            )
        if not all(_is_int(n) for n in (num_train, num_test, episode_length, tasks_per_class)):
            raise UserError(
                "Meta-World: num_train, num_test, tasks_per_class and episode_length must be "
                "integers"
            )
        if benchmark == "ML1" and not (1 <= num_train <= 50 and 0 <= num_test <= 50):
            raise UserError(
                f"Meta-World ML1 has 50 training and 50 test goals: num_train must be in "
                f"[1, 50] and num_test in [0, 50], got {num_train} / {num_test}"
            )
        if not 1 <= tasks_per_class <= 50:
            raise UserError(f"tasks_per_class must be in [1, 50], got {tasks_per_class}")
        if not 1 <= episode_length <= 500:
            raise UserError(f"Meta-World episodes last at most 500 steps, got {episode_length}")
        self.benchmark = benchmark
        self.env_name = env_name
        self.split_seed = split_seed
        self.episode_length = episode_length
        self.tasks_per_class = tasks_per_class
        if benchmark == "ML1":
            self.num_train, self.num_test = num_train, num_test
        else:  # fixed by the benchmark's classes
            train, test = {"ML10": (10, 5), "ML45": (45, 5)}[benchmark]
            self.num_train, self.num_test = train * tasks_per_class, test * tasks_per_class
        self._tasks: list[Any] | None = None
        self._policies: dict[str, Any] = {}

    @property
    def name(self) -> str:
        if self.benchmark == "ML1":
            return f"meta/ML1-{self.env_name.removesuffix('-v3')}"
        return f"meta/{self.benchmark}"

    # -- tasks ----------------------------------------------------------------------------------

    def _bench(self):
        key = (self.benchmark, self.env_name if self.benchmark == "ML1" else None, self.split_seed)
        if key not in _BENCHMARKS:
            import metaworld

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.benchmark == "ML1":
                    _BENCHMARKS[key] = metaworld.ML1(self.env_name, seed=self.split_seed)
                else:
                    _BENCHMARKS[key] = getattr(metaworld, self.benchmark)(seed=self.split_seed)
        return _BENCHMARKS[key]

    def _task_list(self) -> list[Any]:
        """Every task, train then test (global task index = position)."""
        if self._tasks is None:
            bench = self._bench()
            if self.benchmark == "ML1":
                self._tasks = [
                    *bench.train_tasks[: self.num_train],
                    *bench.test_tasks[: self.num_test],
                ]
            else:
                k = self.tasks_per_class

                def per_class(classes, tasks):
                    return [
                        t for name in classes for t in [x for x in tasks if x.env_name == name][:k]
                    ]

                self._tasks = [
                    *per_class(bench.train_classes, bench.train_tasks),
                    *per_class(bench.test_classes, bench.test_tasks),
                ]
        return self._tasks

    def task(self, index: int):
        """The Meta-World ``Task`` of global task ``index``."""
        return self._task_list()[index]

    def goal(self, index: int) -> np.ndarray:
        """Where the hidden goal of global task ``index`` is (x, y, z): what the agent must
        infer, and what tells two tasks of one kind apart."""
        env = self._env(index)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env.reset(seed=0)
            return np.array(env._target_pos, np.float64)
        finally:
            self._release(np.asarray([index]), [env])

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

    def _pool(self, index: int) -> list[Any]:
        task = self.task(index)
        return _IDLE.setdefault((task.env_name, task.data), [])

    def _env(self, index: int):
        idle = self._pool(index)
        if idle:
            return idle.pop()
        bench, task = self._bench(), self.task(index)
        classes = {**bench.train_classes, **bench.test_classes}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = classes[task.env_name]()
            env.set_task(task)
        env.seqrl_task_name = task.env_name
        return env

    def _release(self, tasks: np.ndarray, envs: list[Any]) -> None:
        for index, env in zip(tasks, envs):
            self._pool(int(index)).append(env)

    @property
    def oracle_name(self) -> str:
        return "Meta-World's scripted policies (metaworld.policies), shown the goal"

    def scripted_action(self, env, obs: np.ndarray) -> np.ndarray:
        """The package's scripted policy of ``env``'s task, shown the goal that ML hides."""
        name = env.seqrl_task_name
        if name not in self._policies:
            from metaworld.policies import ENV_POLICY_MAP

            self._policies[name] = ENV_POLICY_MAP[name]()
        full = np.array(obs, np.float64)
        full[GOAL] = env._target_pos
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high" on every call
            return np.asarray(self._policies[name].get_action(full), np.float32)

    def rollout(self, tasks, key, act, observe, carry, length: int | None = None):
        """One episode per lane (lane ``i`` runs global task ``tasks[i]``), ``length`` steps at
        most, on the host. ``act(carry, obs, first, key) -> (carry, action)`` and ``observe(carry,
        action, reward, next_obs) -> carry`` as in :func:`seqrl.evaluate.lane_rollout` (pass
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
                    carry, action = act(carry, obs, np.full(lanes, t == 0), act_key)
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
