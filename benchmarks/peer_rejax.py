"""rejax PPO on gymnax CartPole-v1 with PureJaxRL's hyperparameters (seqrl's cartpole config).

Runs in ``.venv-rejax`` (rejax 0.1.3 needs gymnax 0.0.9's five-value ``step``). rejax's own
``PPO.train`` runs evaluation rollouts inside its scan; to time it the way seqrl's loop is timed,
this worker drives rejax's public pieces instead: ``PPO.create``, ``init_state`` and
``train_iteration`` (one rollout + epochs of SGD), jitted in the same 20 chunks of updates that
seqrl uses, with the learner state donated and the clock read between chunks. Compile seconds are
ahead-of-time compiles of init, the chunk and the final evaluation, as in seqrl. The solve clock
is real time since just before ``PPO.create``.

Two things rejax does not do by itself are added from outside, without touching rejax:
- the learning rate is annealed linearly per update (PureJaxRL's schedule) by passing an optax
  schedule as ``learning_rate``;
- training-episode returns are counted by a thin gymnax wrapper (:class:`EpisodeCounter`), the
  same statistic seqrl logs (mean return of the episodes that ended in each update).
"""

from __future__ import annotations

import math
import os
import time
from importlib.metadata import version
from typing import Any

from benchmarks.common import UpdateRow, peak_rss_mb, time_to_return, worker_parser, write_result

# PureJaxRL's CartPole PPO, as in configs/ppo/cartpole.yaml.
NUM_ENVS = 4
NUM_STEPS = 128
UPDATE_EPOCHS = 4
NUM_MINIBATCHES = 4
LR = 2.5e-4
GAMMA = 0.99
GAE_LAMBDA = 0.95
CLIP_EPS = 0.2
ENT_COEF = 0.01
VF_COEF = 0.5
MAX_GRAD_NORM = 0.5
HIDDEN_SIZES = (64, 64)
ACTIVATION = "tanh"
NUM_CHUNKS = 20  # seqrl's loop.num_chunks
EVAL_EPISODES = 64  # seqrl's loop.eval_episodes


def main() -> None:
    args = worker_parser(__doc__.splitlines()[0]).parse_args()
    t_import = time.perf_counter()
    import gymnax
    import jax
    import jax.numpy as jnp
    from flax import struct
    from rejax import PPO
    from rejax.evaluate import evaluate
    from rejax.networks import DiscretePolicy

    import_seconds = time.perf_counter() - t_import

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

    num_updates = args.total_steps // (NUM_ENVS * NUM_STEPS)
    sgd_steps_per_update = UPDATE_EPOCHS * NUM_MINIBATCHES

    def learning_rate(count: jax.Array) -> jax.Array:
        # PureJaxRL: lr * (1 - update / num_updates); each optimizer steps once per minibatch.
        return LR * (1.0 - (count // sgd_steps_per_update) / num_updates)

    t_start = time.perf_counter()  # the solve clock: real seconds from here
    env, env_params = gymnax.make("CartPole-v1")
    algo = PPO.create(
        env=EpisodeCounter(env),
        env_params=env_params,
        num_envs=NUM_ENVS,
        num_steps=NUM_STEPS,
        num_epochs=UPDATE_EPOCHS,
        num_minibatches=NUM_MINIBATCHES,
        learning_rate=learning_rate,
        gamma=GAMMA,
        gae_lambda=GAE_LAMBDA,
        clip_eps=CLIP_EPS,
        ent_coef=ENT_COEF,
        vf_coef=VF_COEF,
        max_grad_norm=MAX_GRAD_NORM,
        total_timesteps=num_updates * NUM_ENVS * NUM_STEPS,
        agent_kwargs={"activation": ACTIVATION, "hidden_layer_sizes": HIDDEN_SIZES},
    )
    updates_per_chunk = math.ceil(num_updates / NUM_CHUNKS)
    num_chunks = math.ceil(num_updates / updates_per_chunk)

    def counters(ts: Any) -> tuple[jax.Array, jax.Array]:
        return ts.env_state.episodes.sum(), ts.env_state.return_sum.sum()

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
            dist = algo.actor.apply(
                ts.actor_ts.params, obs[None], method=DiscretePolicy._action_dist
            )
            return dist.mode()[0]

        _, returns = evaluate(act, key, env, env_params, EVAL_EPISODES)
        return returns

    # COMPILE ahead of time: init, one chunk, the final evaluation.
    key = jax.random.PRNGKey(args.seed)
    eval_key = jax.random.fold_in(key, 1_000_003)
    t0 = time.perf_counter()
    init = jax.jit(algo.init_state).lower(key).compile()
    compile_seconds = time.perf_counter() - t0
    # rejax builds a new state class on every trace of init_state: take the one init returns.
    ts = jax.block_until_ready(init(key))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), ts)
    t0 = time.perf_counter()
    n_active = jnp.asarray(updates_per_chunk, jnp.int32)
    chunk_c = jax.jit(chunk, donate_argnums=0).lower(abstract, n_active).compile()
    eval_c = jax.jit(final_returns).lower(abstract, eval_key).compile()
    compile_seconds += time.perf_counter() - t0

    # TRAIN in chunks; the clock stops only between chunks.
    train_seconds = 0.0
    rows: list[UpdateRow] = []
    for c in range(num_chunks):
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
                    env_steps=(first + i + 1) * NUM_ENVS * NUM_STEPS,
                    wall_seconds=start + dt * (i + 1) / n,  # interpolated, as seqrl does
                    episodes=int(episodes[i]),
                    return_sum=float(returns[i]),
                )
            )
        train_seconds += dt
    returns = jax.device_get(eval_c(ts, eval_key))
    total_steps = num_updates * NUM_ENVS * NUM_STEPS

    write_result(
        args.out,
        {
            "peer": "rejax",
            "algorithm": "rejax.PPO (train_iteration in jitted chunks), gymnax 0.0.9 CartPole-v1",
            "hyperparameters": {
                "num_envs": algo.num_envs,
                "num_steps": algo.num_steps,
                "num_updates": num_updates,
                "update_epochs": algo.num_epochs,
                "num_minibatches": algo.num_minibatches,
                "lr_first_update": float(learning_rate(jnp.asarray(0))),
                "lr_last_update": float(
                    learning_rate(jnp.asarray((num_updates - 1) * sgd_steps_per_update))
                ),
                "gamma": float(algo.gamma),
                "gae_lambda": float(algo.gae_lambda),
                "clip_eps": float(algo.clip_eps),
                "ent_coef": float(algo.ent_coef),
                "vf_coef": float(algo.vf_coef),
                "max_grad_norm": float(algo.max_grad_norm),
                "hidden_sizes": list(algo.actor.hidden_layer_sizes),
                "activation": algo.actor.activation.__name__,
            },
            "env_steps": total_steps,
            "compile_seconds": round(compile_seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "env_steps_per_second": round(total_steps / max(train_seconds, 1e-9), 1),
            "final_return": float(returns.mean()),
            "final_return_std": float(returns.std()),
            "final_eval": f"{EVAL_EPISODES} episodes, deterministic (policy mode)",
            "solve": time_to_return(rows),
            "import_seconds": round(import_seconds, 3),
            "peak_rss_mb": peak_rss_mb(),
            "versions": {
                pkg: version(pkg)
                for pkg in ("rejax", "jax", "jaxlib", "flax", "optax", "gymnax", "distrax")
            },
            "threads": {
                "XLA_FLAGS": os.environ.get("XLA_FLAGS", "unset (XLA defaults)"),
                "jax_devices": [str(d) for d in jax.devices()],
            },
            "updates": rows,
        },
    )


if __name__ == "__main__":
    main()
