"""Sequence layers: the parallel resettable scan equals the sequential recurrence, resets
isolate episodes, chunking with the carry and T = 1 stepping equal the whole sequence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl.scan import resettable_scan, sequential_scan
from seqrl.sequence import SequenceStack, make_layer
from seqrl.sequence.s5 import hippo_legs, hippo_normal_eig

KINDS = ["s5", "s4d", "gru", "lstm"]
H, P, B = 8, 16, 3


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def _layer(kind):
    return make_layer(kind, H, state_size=P)


def _init(layer, T=4):
    x = jnp.zeros((T, B, H))
    return layer.init(jax.random.key(0), layer.initialize_carry(B), x, jnp.zeros((T, B), bool))


def _data(T, seed=1, p_reset=0.05):
    kx, kr = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (T, B, H))
    resets = jax.random.bernoulli(kr, p_reset, (T, B))
    return x, resets


def _max_err(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("kind", ["s5", "s4d"])
def test_parallel_scan_equals_sequential_with_random_resets_T1024(kind):
    layer = _layer(kind)
    params = _init(layer)
    T = 1024
    x, resets = _data(T)
    # the layer's own discretized recurrence, run both ways
    if kind == "s5":
        a, b_bar = layer.apply(params, method=layer.discretize)
        b = x.astype(jnp.complex64) @ b_bar.T
    else:
        p = params["params"]
        A = -jnp.exp(p["log_A_real"]) + 1j * p["A_imag"]
        da = jnp.exp(jnp.exp(p["log_dt"])[:, None] * A)
        db = (da - 1) / A
        a, b = da, x[..., None] * db
    h0 = jax.tree.map(lambda z: z + 0.3, layer.initialize_carry(B))
    parallel = jax.jit(resettable_scan)(a, b, resets, h0)
    sequential = jax.jit(sequential_scan)(a, b, resets, h0)
    assert _max_err(parallel, sequential) <= 1e-5


def test_scan_operator_hand_example():
    """Real recurrence h_t = (1 - r_t) a h_{t-1} + b_t with a = 0.5, b = 1, h0 = 4."""
    a, b = jnp.full((4, 1), 0.5), jnp.ones((4, 1))
    resets = jnp.array([[False], [False], [True], [False]])
    h = resettable_scan(a, b, resets, jnp.array([4.0]))
    np.testing.assert_allclose(h[:, 0], [3.0, 2.5, 1.0, 1.5])


def test_custom_gradient_equals_autodiff_of_the_sequential_recurrence():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(7), 4)
    T = 33
    a = 0.95 * jnp.exp(1j * jax.random.normal(k1, (T, B, 5))).astype(jnp.complex64)
    b = (jax.random.normal(k2, (T, B, 5)) + 1j * jax.random.normal(k3, (T, B, 5))).astype(
        jnp.complex64
    )
    resets = jax.random.bernoulli(k4, 0.1, (T, B))
    h0 = jnp.full((B, 5), 0.5 - 0.2j, jnp.complex64)
    weights = jnp.linspace(-1, 1, T * B * 5).reshape(T, B, 5)

    def loss(scan, a, b, h0):
        h = scan(a, b, resets, h0)
        return jnp.sum(weights * h.real) + jnp.sum(jnp.abs(h) ** 2)

    g_par = jax.grad(lambda *x: loss(resettable_scan, *x), (0, 1, 2))(a, b, h0)
    g_seq = jax.grad(lambda *x: loss(sequential_scan, *x), (0, 1, 2))(a, b, h0)
    scale = max(float(jnp.abs(g).max()) for g in g_seq)
    assert _max_err(g_par, g_seq) <= 1e-5 * scale


@pytest.mark.parametrize("kind", KINDS)
def test_reset_makes_a_then_b_equal_b_alone(kind):
    layer = _layer(kind)
    params = _init(layer)
    apply = jax.jit(layer.apply)
    xa, _ = _data(7, seed=2)
    xb, rb = _data(5, seed=3)
    rb = rb.at[0].set(True)
    zero = layer.initialize_carry(B)
    no_resets = jnp.zeros((7, B), bool)
    carry_a, _ = apply(params, zero, xa, no_resets)
    carry_ab, y_ab = apply(params, carry_a, xb, rb)
    carry_b, y_b = apply(params, zero, xb, rb)
    assert _max_err(y_ab, y_b) <= 1e-6
    assert _max_err(carry_ab, carry_b) <= 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_two_chunks_with_the_carry_equal_the_whole(kind):
    layer = _layer(kind)
    params = _init(layer)
    apply = jax.jit(layer.apply)
    x, resets = _data(64, seed=4, p_reset=0.1)
    zero = layer.initialize_carry(B)
    carry, y = apply(params, zero, x, resets)
    c1, y1 = apply(params, zero, x[:23], resets[:23])
    c2, y2 = apply(params, c1, x[23:], resets[23:])
    assert _max_err(jnp.concatenate([y1, y2]), y) <= 1e-5
    assert _max_err(c2, carry) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_stepping_with_T1_equals_the_whole_scan(kind):
    layer = _layer(kind)
    params = _init(layer)
    apply = jax.jit(layer.apply)
    x, resets = _data(48, seed=5, p_reset=0.1)
    carry, y = apply(params, layer.initialize_carry(B), x, resets)

    def step(c, inputs):
        x_t, r_t = inputs
        c, y_t = apply(params, c, x_t[None], r_t[None])
        return c, y_t[0]

    c_steps, y_steps = jax.lax.scan(step, layer.initialize_carry(B), (x, resets))
    assert _max_err(y_steps, y) <= 1e-5
    assert _max_err(c_steps, carry) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_finite_and_nonzero(kind):
    stack = SequenceStack(kind, d_model=H, num_layers=2, layer_kwargs={"state_size": P})
    x, resets = _data(32, seed=6, p_reset=0.1)
    carry = stack.initialize_carry(B)
    params = stack.init(jax.random.key(0), carry, x, resets)

    def loss(p):
        return jnp.sum(stack.apply(p, carry, x, resets)[1] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_hippo_normal_part_eigenvalues():
    n = 8
    lam, v = hippo_normal_eig(n)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    p = np.sqrt(np.arange(n) + 0.5)
    s = hippo_legs(n) + np.outer(p, p)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T, s, atol=1e-10)
    np.testing.assert_allclose([hippo_legs(3)[2, 0], hippo_legs(3)[1, 1]], [-np.sqrt(5), -2])


def test_s5_blocks_and_bilinear():
    layer = make_layer("s5", H, state_size=P, blocks=4, discretization="bilinear")
    params = _init(layer)
    apply = jax.jit(layer.apply)
    assert params["params"]["log_step"].shape == (P // 2,)
    assert params["params"]["lambda_re"].shape == (P // 2,)
    x, resets = _data(16)
    _, y = apply(params, layer.initialize_carry(B), x, resets)
    assert y.shape == (16, B, H) and bool(jnp.isfinite(y).all())
    a_bar, _ = layer.apply(params, method=layer.discretize)
    assert float(jnp.abs(a_bar).max()) < 1.0  # stable: Re(Lambda) < 0
