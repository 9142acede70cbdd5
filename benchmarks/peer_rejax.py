"""rejax PPO with seqrl's hyperparameters: gymnax CartPole-v1 (PureJaxRL's, seqrl's cartpole
config) or, with ``--task inverted_pendulum``, brax inverted_pendulum on the spring backend
(seqrl's ``configs/ppo/brax/inverted_pendulum.yaml``) through rejax's own brax adapter
(``rejax.compat.create("brax/...")``).

Runs in ``.venv-rejax`` (rejax 0.1.3 needs gymnax 0.0.9's five-value ``step``). rejax's own
``PPO.train`` runs evaluation rollouts inside its scan; to time it the way seqrl's loop is timed,
this worker drives rejax's public pieces instead: ``PPO.create``, ``init_state`` and
``train_iteration`` (one rollout + epochs of SGD), jitted in the same chunks of updates as
seqrl's loop (``--updates-per-chunk``, from seqrl's plan), with the learner state donated and
the clock read between chunks. Compile seconds are ahead-of-time compiles of init, the chunk
and the final evaluation, as in seqrl. The solve clock is real time since just before
``PPO.create``.

Two things rejax does not do by itself are added from outside, without touching rejax:
- the learning rate is annealed linearly per update (PureJaxRL's schedule) by passing an optax
  schedule as ``learning_rate``;
- training-episode returns are counted by a thin gymnax wrapper (:class:`EpisodeCounter`), the
  same statistic seqrl logs (mean return of the episodes that ended in each update).
"""

from __future__ import annotations

import copy
import functools
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    UpdateRow,
    package_versions,
    ppo_result,
    timed_imports,
    worker_parser,
    write_result,
    xla_threads,
)

# PureJaxRL's CartPole PPO, as in configs/ppo/cartpole.yaml.
CARTPOLE = {
    "env": "CartPole-v1",
    "num_envs": 4,
    "num_steps": 128,
    "update_epochs": 4,
    "num_minibatches": 4,
    "lr": 2.5e-4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_eps": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "hidden_sizes": (64, 64),
    "activation": "tanh",
    "normalize_obs": False,
    "normalize_reward": False,
    "eval_episodes": 64,  # seqrl's loop.eval_episodes
}
# As in configs/ppo/brax/inverted_pendulum.yaml.
TASKS = {
    "cartpole": CARTPOLE,
    "inverted_pendulum": {
        **CARTPOLE,
        "env": "brax/inverted_pendulum",
        "num_envs": 32,
        "num_steps": 64,
        "lr": 3e-4,
        "ent_coef": 0.0,
        "normalize_obs": True,
        "normalize_reward": True,
        "eval_episodes": 16,
    },
}


PACKAGES = ("rejax", "jax", "jaxlib", "flax", "optax", "gymnax", "distrax")


def import_libraries() -> None:
    """JAX, flax and rejax (which brings in gymnax, and brax): imported once, on the import
    clock; the functions below import them again from the module cache."""
    import jax  # noqa: F401
    import jax.numpy  # noqa: F401
    from flax import struct  # noqa: F401
    from rejax import PPO  # noqa: F401
    from rejax.compat import create  # noqa: F401
    from rejax.evaluate import evaluate  # noqa: F401


@functools.cache
def counter_classes() -> tuple[type, type]:
    """``(CounterState, EpisodeCounter)``: a thin gymnax wrapper (gymnax 0.0.9 API) that counts
    finished episodes and their returns in the env state, as seqrl logs them."""
    import jax
    import jax.numpy as jnp
    from flax import struct

    @struct.dataclass
    class CounterState:
        env_state: Any
        running_return: jax.Array
        episodes: jax.Array
        return_sum: jax.Array

    class EpisodeCounter:
        """Counts finished episodes and their returns in the env state (gymnax 0.0.9 API)."""

        def __init__(self, env: Any) -> None:
            self.env = env

        def __getattr__(self, name: str) -> Any:
            if "env" not in self.__dict__:  # mid-copy (PPO.create deep-copies its config)
                raise AttributeError(name)
            return getattr(self.env, name)

        def __deepcopy__(self, memo: dict) -> EpisodeCounter:
            # else __getattr__ hands over the wrapped env's own __deepcopy__ (rejax's brax
            # adapter has one) and the copy loses this wrapper
            return EpisodeCounter(copy.deepcopy(self.env, memo))

        def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, CounterState]:
            obs, state = self.env.reset(key, params)
            zero = jnp.zeros((), jnp.float32)
            return obs, CounterState(state, zero, jnp.zeros((), jnp.int32), zero)

        def step(self, key: jax.Array, state: CounterState, action: jax.Array, params: Any = None):
            obs, env_state, reward, done, info = self.env.step(key, state.env_state, action, params)
            ret = state.running_return + reward
            state = CounterState(
                env_state=env_state,
                running_return=jnp.where(done, 0.0, ret),
                episodes=state.episodes + done.astype(jnp.int32),
                return_sum=state.return_sum + jnp.where(done, ret, 0.0),
            )
            return obs, state, reward, done, info

    return CounterState, EpisodeCounter


def lr_schedule(lr: float, sgd_steps_per_update: int, num_updates: int) -> Callable:
    """PureJaxRL's schedule as an optax one: lr * (1 - update / num_updates), where each
    optimizer steps once per minibatch."""

    def learning_rate(count: Any) -> Any:
        return lr * (1.0 - (count // sgd_steps_per_update) / num_updates)

    return learning_rate


def create_ppo(h: dict, num_updates: int, learning_rate: Callable) -> tuple[Any, Any, Any]:
    """``(algo, env, env_params)``: rejax's PPO with seqrl's hyperparameters ``h`` on the
    episode-counting wrapper of the task's env (``env`` itself, unwrapped, for evaluation)."""
    from rejax import PPO
    from rejax.compat import create

    brax = h["env"].startswith("brax/")
    env, env_params = create(h["env"], **({"backend": "spring"} if brax else {}))
    algo = PPO.create(
        env=counter_classes()[1](env),
        env_params=env_params,
        num_envs=h["num_envs"],
        num_steps=h["num_steps"],
        num_epochs=h["update_epochs"],
        num_minibatches=h["num_minibatches"],
        learning_rate=learning_rate,
        gamma=h["gamma"],
        gae_lambda=h["gae_lambda"],
        clip_eps=h["clip_eps"],
        ent_coef=h["ent_coef"],
        vf_coef=h["vf_coef"],
        max_grad_norm=h["max_grad_norm"],
        normalize_observations=h["normalize_obs"],
        normalize_rewards=h["normalize_reward"],
        reward_normalization_discount=h["gamma"],
        total_timesteps=num_updates * h["num_envs"] * h["num_steps"],
        agent_kwargs={"activation": h["activation"], "hidden_layer_sizes": h["hidden_sizes"]},
    )
    return algo, env, env_params


def programs(algo: Any, env: Any, env_params: Any, eval_episodes: int, updates_per_chunk: int):
    """``(init_state, chunk, final_returns)``, to be jitted: the learner state from a key; one
    chunk of ``updates_per_chunk`` updates (those past ``n_active`` skipped) with each update's
    finished episodes and their return sum; the final deterministic evaluation's returns."""
    import jax
    import jax.numpy as jnp
    from rejax.evaluate import evaluate

    counter_state = counter_classes()[0]

    def counters(ts: Any) -> tuple[jax.Array, jax.Array]:
        counted = ts.env_state
        while not isinstance(counted, counter_state):  # under rejax's FloatObsWrapper
            counted = counted.env_state
        return counted.episodes.sum(), counted.return_sum.sum()

    def chunk(ts: Any, n_active: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        def one_update(ts: Any) -> tuple[Any, tuple[jax.Array, jax.Array]]:
            episodes, returns = counters(ts)
            ts = algo.train_iteration(ts)
            episodes_after, returns_after = counters(ts)
            return ts, (episodes_after - episodes, returns_after - returns)

        def skip(ts: Any) -> tuple[Any, tuple[jax.Array, jax.Array]]:
            return ts, (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32))

        def body(ts: Any, i: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
            return jax.lax.cond(i < n_active, one_update, skip, ts)

        return jax.lax.scan(body, ts, jnp.arange(updates_per_chunk))

    def final_returns(ts: Any, key: jax.Array) -> jax.Array:
        def act(obs: jax.Array, _: jax.Array) -> jax.Array:
            if algo.normalize_observations:
                obs = algo.normalize_obs(ts.obs_rms_state, obs)
            dist = algo.actor.apply(ts.actor_ts.params, obs[None], method="_action_dist")
            action = dist.mode()[0]
            return action if algo.discrete else jnp.clip(action, -1.0, 1.0)

        _, returns = evaluate(act, key, env, env_params, eval_episodes)
        return returns

    def init_state(key: jax.Array) -> Any:
        ts = algo.init_state(key)
        if algo.normalize_rewards:
            # rejax 0.1.3 starts the reward statistics as Python ints (mean=0, var=1): int32
            # leaves that its own rollout scan rejects once they turn float32
            rms = ts.rew_rms_state
            rms = rms.replace(mean=jnp.float32(rms.mean), var=jnp.float32(rms.var))
            ts = ts.replace(rew_rms_state=rms)
        return ts

    return init_state, chunk, final_returns


def compile_programs(init_state, chunk, final_returns, seed: int, updates_per_chunk: int):
    """COMPILE ahead of time: init, one chunk, the final evaluation. ``(learner state, compiled
    chunk, compiled evaluation, evaluation key, compile seconds)``."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(seed)
    eval_key = jax.random.fold_in(key, 1_000_003)
    t0 = time.perf_counter()
    init = jax.jit(init_state).lower(key).compile()
    compile_seconds = time.perf_counter() - t0
    # rejax builds a new state class on every trace of init_state: take the one init returns.
    ts = jax.block_until_ready(init(key))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), ts)
    t0 = time.perf_counter()
    n_active = jnp.asarray(updates_per_chunk, jnp.int32)
    chunk_c = jax.jit(chunk, donate_argnums=0).lower(abstract, n_active).compile()
    eval_c = jax.jit(final_returns).lower(abstract, eval_key).compile()
    compile_seconds += time.perf_counter() - t0
    return ts, chunk_c, eval_c, eval_key, compile_seconds


def train(chunk_c, ts, num_updates: int, updates_per_chunk: int, steps_per_update: int, t_start):
    """TRAIN in chunks; the clock stops only between chunks. ``(learner state, one row per
    update, seconds inside the chunks)``; a row's time is interpolated, as seqrl does."""
    import jax
    import jax.numpy as jnp

    train_seconds = 0.0
    rows: list[UpdateRow] = []
    for c in range(math.ceil(num_updates / updates_per_chunk)):
        first = c * updates_per_chunk
        n = min(updates_per_chunk, num_updates - first)
        t1 = time.perf_counter()
        ts, (episodes, returns) = chunk_c(ts, jnp.asarray(n, jnp.int32))
        episodes, returns = jax.device_get(jax.block_until_ready((episodes, returns)))
        dt = time.perf_counter() - t1
        start = t1 - t_start
        for i in range(n):
            rows.append(
                UpdateRow(
                    env_steps=(first + i + 1) * steps_per_update,
                    wall_seconds=start + dt * (i + 1) / n,  # interpolated, as seqrl does
                    episodes=int(episodes[i]),
                    return_sum=float(returns[i]),
                )
            )
        train_seconds += dt
    return ts, rows, train_seconds


def hyperparameters(algo, num_updates, updates_per_chunk, learning_rate, sgd_steps) -> dict:
    """What rejax actually ran, under the keys seqrl's worker reports (checked key by key)."""
    import jax.numpy as jnp

    return {
        "num_envs": algo.num_envs,
        "num_steps": algo.num_steps,
        "num_updates": num_updates,
        "updates_per_chunk": updates_per_chunk,
        "update_epochs": algo.num_epochs,
        "num_minibatches": algo.num_minibatches,
        "lr_first_update": float(learning_rate(jnp.asarray(0))),
        "lr_last_update": float(learning_rate(jnp.asarray((num_updates - 1) * sgd_steps))),
        "gamma": float(algo.gamma),
        "gae_lambda": float(algo.gae_lambda),
        "clip_eps": float(algo.clip_eps),
        "ent_coef": float(algo.ent_coef),
        "vf_coef": float(algo.vf_coef),
        "max_grad_norm": float(algo.max_grad_norm),
        "hidden_sizes": list(algo.actor.hidden_layer_sizes),
        "activation": algo.actor.activation.__name__,
        "normalize_obs": algo.normalize_observations,
        "normalize_reward": algo.normalize_rewards,
    }


def main() -> None:
    args = worker_parser(__doc__.splitlines()[0]).parse_args()
    _, import_seconds = timed_imports(import_libraries)
    import jax

    counter_classes()  # the wrapper's classes, defined before the solve clock starts

    h = TASKS[args.task]
    brax = h["env"].startswith("brax/")
    steps_per_update = h["num_envs"] * h["num_steps"]
    num_updates = args.total_steps // steps_per_update
    sgd_steps_per_update = h["update_epochs"] * h["num_minibatches"]
    learning_rate = lr_schedule(h["lr"], sgd_steps_per_update, num_updates)

    t_start = time.perf_counter()  # the solve clock: real seconds from here
    algo, env, env_params = create_ppo(h, num_updates, learning_rate)
    if args.updates_per_chunk is None:
        sys.exit("peer_rejax: --updates-per-chunk is required (the orchestrator passes seqrl's)")
    per_chunk = args.updates_per_chunk
    init_state, chunk, final_returns = programs(
        algo, env, env_params, h["eval_episodes"], per_chunk
    )
    ts, chunk_c, eval_c, eval_key, compile_seconds = compile_programs(
        init_state, chunk, final_returns, args.seed, per_chunk
    )
    ts, rows, train_seconds = train(chunk_c, ts, num_updates, per_chunk, steps_per_update, t_start)
    returns = jax.device_get(eval_c(ts, eval_key))

    about = {
        "peer": "rejax",
        "algorithm": "rejax.PPO (train_iteration in jitted chunks), "
        + (f"{h['env']} (spring) via rejax.compat" if brax else "gymnax 0.0.9 CartPole-v1"),
        "hyperparameters": hyperparameters(
            algo, num_updates, per_chunk, learning_rate, sgd_steps_per_update
        ),
    }
    result = ppo_result(
        about,
        {"compile_seconds": round(compile_seconds, 3)},
        env_steps=num_updates * steps_per_update,
        train_seconds=train_seconds,
        final_returns=(float(returns.mean()), float(returns.std())),
        eval_episodes=h["eval_episodes"],
        rows=rows,
        task=args.task,
        import_seconds=import_seconds,
        versions=package_versions(PACKAGES + (("brax", "mujoco") if brax else ())),
        threads=xla_threads(jax.devices()),
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
