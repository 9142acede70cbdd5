"""seqrl.runtime.lower: Threefry unrolled on CPU gives the same bits, and is left out of
programs with custom calls."""

import gc

import jax
import jax.numpy as jnp
import numpy as np

from seqrl import config as cfg
from seqrl import loop, runtime
from seqrl.agents import ppo


def _random_work(key):
    """Every kind of random call a rollout makes: split, fold_in, uniform, categorical,
    normal, under vmap too."""
    a, b, c = jax.random.split(key, 3)
    keys = jax.random.split(a, 4)
    draws = jax.vmap(lambda k: jax.random.uniform(k, (3,)))(keys)
    actions = jax.random.categorical(b, jnp.zeros((5, 7)))
    return draws, actions, jax.random.normal(jax.random.fold_in(c, 11), (2, 2)), keys


def _while_loops(lowered) -> int:
    return lowered.as_text().count("stablehlo.while")


def test_unrolled_threefry_gives_the_same_bits_without_while_loops():
    key = jax.random.PRNGKey(42)
    default = jax.jit(lambda k: _random_work(k)).lower(key)
    unrolled = runtime.lower(lambda k: _random_work(k), key)
    # JAX's CPU lowering loops over the rounds; the unrolled one has no loop at all
    assert _while_loops(default) > 0
    assert _while_loops(unrolled) == 0
    for x, y in zip(
        jax.tree.leaves(default.compile()(key)), jax.tree.leaves(unrolled.compile()(key))
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the process-wide lowering is back to JAX's own afterwards
    assert _while_loops(jax.jit(lambda k: _random_work(k)).lower(key)) > 0


def test_programs_with_custom_calls_keep_the_default_lowering():
    def qr_then_random(key):  # an orthogonal init: LAPACK custom calls next to random draws
        q, _ = jnp.linalg.qr(jax.random.normal(key, (6, 6)))
        return q, jax.random.uniform(jax.random.fold_in(key, 1), (3,))

    key = jax.random.PRNGKey(0)
    lowered = runtime.lower(qr_then_random, key)
    assert {"lapack_sgeqrf_ffi", "lapack_sorgqr_ffi"} <= runtime.custom_calls(lowered)
    assert _while_loops(lowered) > 0
    q, _ = lowered.compile()(key)
    np.testing.assert_allclose(np.asarray(q.T @ q), np.eye(6), atol=1e-5)


def test_ppo_chunk_is_bit_identical_under_the_unrolled_lowering(default_emitters):
    config = cfg.load_config(
        "configs/ppo/cartpole.yaml",
        ["total_timesteps=128", "ppo.num_steps=16", "num_envs=4", "loop.num_chunks=1"],
    )
    trainer = ppo.make_trainer(config)
    keys = loop.seed_keys(3, 1)
    states = jax.jit(loop.init_seeds(trainer))(keys)
    chunk = lambda: loop.make_chunk(trainer, 2)  # a fresh function: no cached lowering
    options = default_emitters
    reference = jax.jit(chunk()).lower(states, None).compile(options)(states, None)
    lowered = runtime.lower(chunk(), states, None)
    assert _while_loops(lowered) < _while_loops(jax.jit(chunk()).lower(states, None))
    result = lowered.compile(options)(states, None)
    for x, y in zip(jax.tree.leaves(reference), jax.tree.leaves(result)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_once_options_give_the_same_bits():
    """Init and the final evaluation compile with RUN_ONCE_OPTIONS: cheaper, and the same
    results as XLA's defaults (else a run's numbers would depend on a compile setting)."""
    config = cfg.load_config(
        "configs/ppo/cartpole.yaml", ["total_timesteps=128", "ppo.num_steps=16", "num_envs=4"]
    )
    trainer = ppo.make_trainer(config)
    keys, eval_keys = loop.run_keys(3, 2)
    lowered = runtime.lower(loop.init_seeds(trainer), keys, run_once=True)
    assert _while_loops(lowered) > 0  # run_once: JAX's own lowering, traced once
    # explicit levels: the suite itself compiles at level 0 (tests/conftest.py)
    default = {"xla_backend_optimization_level": 3}  # XLA:CPU's default
    states = lowered.compile(compiler_options=default)(keys)
    _assert_same(states, lowered.compile(compiler_options=runtime.RUN_ONCE_OPTIONS)(keys))
    evaluate = jax.vmap(lambda s, k: trainer.evaluate(s, k, 3, False))
    lowered = runtime.lower(evaluate, states, eval_keys)
    _assert_same(
        lowered.compile(compiler_options=default)(states, eval_keys),
        lowered.compile(compiler_options=runtime.RUN_ONCE_OPTIONS)(states, eval_keys),
    )


def test_xla_flags_are_read_and_replaced_by_name():
    flags = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=2"
    assert runtime.xla_flag(flags, "xla_backend_optimization_level") == "2"
    assert runtime.xla_flag(flags, "xla_cpu_use_thunk_runtime") is None
    replaced = runtime.with_xla_flag(flags, "xla_backend_optimization_level", "0")
    assert replaced == "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    assert runtime.with_xla_flag("", "a", "1") == "--a=1"
    assert runtime.with_xla_flag(flags, "xla_backend_optimization_level", None) == flags.split()[0]


def _assert_same(a, b):
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_keys_are_the_op_by_op_derivation():
    """One compiled program, the same keys as deriving them op by op (runs keep their seeds)."""
    keys, eval_keys = loop.run_keys(5, 3)
    base = jax.random.PRNGKey(5)
    expected = jnp.stack([jax.random.fold_in(base, i) for i in range(3)])
    np.testing.assert_array_equal(np.asarray(keys), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(loop.seed_keys(5, 3)), np.asarray(expected))
    folded = jnp.stack([jax.random.fold_in(k, 1_000_003) for k in expected])
    np.testing.assert_array_equal(np.asarray(eval_keys), np.asarray(folded))


def test_gc_paused_restores_the_collector():
    assert gc.isenabled()
    with runtime.gc_paused():
        assert not gc.isenabled()
        with runtime.gc_paused():  # nested (or in another thread): on again after the last
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with runtime.gc_paused():
            pass
        assert not gc.isenabled()  # off before: stays off
    finally:
        gc.enable()


def test_compile_gives_run_once_programs_the_run_once_options(monkeypatch):
    """``runtime.compile``: a hot program with XLA's defaults, a run-once one through
    ``compile_run_once``."""
    x = jnp.float32(1)
    lowered = runtime.lower(lambda v: v + 1, x)
    calls = []
    monkeypatch.setattr(runtime, "compile_run_once", lambda lo: calls.append(lo) or lo.compile())
    assert float(runtime.compile(lowered, run_once=False)(x)) == 2 and calls == []
    assert float(runtime.compile(lowered, run_once=True)(x)) == 2 and calls == [lowered]
