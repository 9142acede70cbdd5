"""Sequence layers: the parallel resettable scan equals a plain loop, S5's discretizations match
values worked out by hand, S5 and S4D compute the recurrence their parameters define (checked
against a numpy loop written from the papers' formulas), resets isolate episodes, chunking with
the carry and T = 1 stepping equal the whole sequence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl.scan import resettable_scan
from seqrl.sequence import SequenceStack, make_layer
from seqrl.sequence.s5 import hippo_legs, hippo_normal_eig

KINDS = ["s5", "s4d", "gru", "lstm"]
H, P, B = 8, 16, 3


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def _layer(kind, **kwargs):
    return make_layer(kind, H, state_size=P, **kwargs)


def _init(layer, T=4):
    x = jnp.zeros((T, B, H))
    return jax.jit(layer.init)(
        jax.random.key(0), layer.initialize_carry(B), x, jnp.zeros((T, B), bool)
    )


def _data(T, seed=1, p_reset=0.05):
    kx, kr = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (T, B, H))
    resets = jax.random.bernoulli(kr, p_reset, (T, B))
    return x, resets


def _max_err(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def _loop(a, b, resets, h0):
    """``h_t = (1 - reset_t) a_t h_{t-1} + b_t`` one step at a time in numpy (complex128)."""
    a, b = np.broadcast_to(np.asarray(a), np.shape(b)), np.asarray(b, np.complex128)
    keep = 1.0 - np.asarray(resets, np.float64).reshape(resets.shape + (1,) * (b.ndim - 2))
    h, out = np.asarray(h0, np.complex128), []
    for t in range(b.shape[0]):
        h = keep[t] * a[t] * h + b[t]
        out.append(h)
    return np.stack(out)


def test_parallel_scan_equals_a_loop_with_random_resets_T1024():
    ka, kp, kb, kc, kr = jax.random.split(jax.random.key(3), 5)
    T, shape = 1024, (B, 6)
    radius = jax.random.uniform(ka, (T, *shape), minval=0.5, maxval=0.999)
    a = (radius * jnp.exp(1j * jax.random.normal(kp, (T, *shape)))).astype(jnp.complex64)
    b = (jax.random.normal(kb, (T, *shape)) + 1j * jax.random.normal(kc, (T, *shape))).astype(
        jnp.complex64
    )
    resets = jax.random.bernoulli(kr, 0.05, (T, B))
    h0 = jnp.full(shape, 0.3 - 0.1j, jnp.complex64)
    np.testing.assert_allclose(
        np.asarray(jax.jit(resettable_scan)(a, b, resets, h0)), _loop(a, b, resets, h0), atol=2e-5
    )
    # a time-invariant a (as S5 passes it) broadcasts against b
    np.testing.assert_allclose(
        np.asarray(jax.jit(resettable_scan)(a[0], b, resets, h0)),
        _loop(np.broadcast_to(a[0], b.shape), b, resets, h0),
        atol=2e-5,
    )


def test_scan_operator_hand_example():
    """Real recurrence h_t = (1 - r_t) a h_{t-1} + b_t with a = 0.5, b = 1, h0 = 4."""
    a, b = jnp.full((4, 1), 0.5), jnp.ones((4, 1))
    resets = jnp.array([[False], [False], [True], [False]])
    h = resettable_scan(a, b, resets, jnp.array([4.0]))
    np.testing.assert_allclose(h[:, 0], [3.0, 2.5, 1.0, 1.5])
    # a reset on the very first step drops the carried state
    h = resettable_scan(a, b, jnp.array([[True], [False], [False], [False]]), jnp.array([4.0]))
    np.testing.assert_allclose(h[:, 0], [1.0, 1.5, 1.75, 1.875])


def test_custom_gradient_equals_autodiff_of_the_loop():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(7), 4)
    T = 33
    a = 0.95 * jnp.exp(1j * jax.random.normal(k1, (T, B, 5))).astype(jnp.complex64)
    b = (jax.random.normal(k2, (T, B, 5)) + 1j * jax.random.normal(k3, (T, B, 5))).astype(
        jnp.complex64
    )
    resets = jax.random.bernoulli(k4, 0.1, (T, B))
    h0 = jnp.full((B, 5), 0.5 - 0.2j, jnp.complex64)
    weights = jnp.linspace(-1, 1, T * B * 5).reshape(T, B, 5)

    def loop(a, b, resets, h0):  # plain autodiff through a Python loop of the recurrence
        keep = 1.0 - resets.astype(jnp.float32)[..., None]
        h, out = h0, []
        for t in range(T):
            h = keep[t] * a[t] * h + b[t]
            out.append(h)
        return jnp.stack(out)

    def loss(scan, a, b, h0):
        h = scan(a, b, resets, h0)
        return jnp.sum(weights * h.real) + jnp.sum(jnp.abs(h) ** 2)

    g_par = jax.jit(jax.grad(lambda *x: loss(resettable_scan, *x), (0, 1, 2)))(a, b, h0)
    g_seq = jax.jit(jax.grad(lambda *x: loss(loop, *x), (0, 1, 2)))(a, b, h0)
    scale = max(float(jnp.abs(g).max()) for g in g_seq)
    assert _max_err(g_par, g_seq) <= 1e-5 * scale


# -- S5 and S4D against the papers' formulas --------------------------------------------------


def _s5_with(lam: complex, step: float, discretization: str):
    """A one-state S5 layer (state size 2, conjugate-symmetric half) with Lambda, Delta and
    Btilde = 1 set by hand, and its (Abar, Bbar)."""
    layer = make_layer("s5", 1, state_size=2, discretization=discretization)

    @jax.jit
    def discretize():
        x = jnp.zeros((2, 1, 1))
        p = layer.init(jax.random.key(0), layer.initialize_carry(1), x, jnp.zeros((2, 1), bool))
        p = dict(p["params"])
        p["lambda_re"], p["lambda_im"] = jnp.array([lam.real]), jnp.array([lam.imag])
        p["log_step"] = jnp.log(jnp.array([step]))
        p["B"] = jnp.array([[[1.0, 0.0]]])
        return layer.apply({"params": p}, method=layer.discretize)

    a_bar, b_bar = discretize()
    return complex(a_bar[0]), complex(b_bar[0, 0])


def test_s5_discretizations_match_values_worked_by_hand():
    """Lambda = -0.5 + 2i, Delta = 0.1, Btilde = 1.
    ZOH: Abar = exp(-0.05 + 0.2i) = e^-0.05 (cos 0.2 + i sin 0.2) = 0.932268 + 0.188980i,
    Bbar = (Abar - 1) / Lambda = (-0.067732 + 0.188980i)(-0.5 - 2i) / 4.25 = 0.096900 + 0.009641i.
    Bilinear: Abar = (0.975 + 0.1i) / (1.025 - 0.1i) = 0.932823 + 0.188568i,
    Bbar = 0.1 / (1.025 - 0.1i) = 0.1 (1.025 + 0.1i) / 1.060625 = 0.096641 + 0.009428i."""
    a, b = _s5_with(complex(-0.5, 2.0), 0.1, "zoh")
    np.testing.assert_allclose([a, b], [0.932268 + 0.188980j, 0.096900 + 0.009641j], atol=2e-6)
    a, b = _s5_with(complex(-0.5, 2.0), 0.1, "bilinear")
    np.testing.assert_allclose([a, b], [0.932823 + 0.188568j, 0.096641 + 0.009428j], atol=2e-6)


def _s5_reference(p, x, resets, discretization):
    """S5 (Smith et al. 2023) from its parameters, in numpy: y = 2 Re(Ctilde h) + D u."""
    lam = np.asarray(p["lambda_re"], np.float64) + 1j * np.asarray(p["lambda_im"], np.float64)
    b = np.asarray(p["B"][..., 0], np.float64) + 1j * np.asarray(p["B"][..., 1], np.float64)
    c = np.asarray(p["C"][..., 0], np.float64) + 1j * np.asarray(p["C"][..., 1], np.float64)
    step = np.exp(np.asarray(p["log_step"], np.float64))
    if discretization == "zoh":
        a_bar = np.exp(lam * step)
        b_bar = ((a_bar - 1) / lam)[:, None] * b
    else:
        a_bar = (1 + step * lam / 2) / (1 - step * lam / 2)
        b_bar = (step / (1 - step * lam / 2))[:, None] * b
    u = np.asarray(x, np.float64)
    h = _loop(a_bar, u @ b_bar.T, np.asarray(resets), np.zeros((u.shape[1], lam.size)))
    return 2 * (h @ c.T).real + np.asarray(p["D"]) * u


def _s4d_reference(p, x, resets):
    """S4D (Gu et al. 2022) from its parameters, in numpy: ZOH with B = 1 per channel."""
    a = -np.exp(np.asarray(p["log_A_real"], np.float64)) + 1j * np.asarray(p["A_imag"])
    dt = np.exp(np.asarray(p["log_dt"], np.float64))[:, None]
    da, c = np.exp(dt * a), np.asarray(p["C"][..., 0]) + 1j * np.asarray(p["C"][..., 1])
    db = (da - 1) / a
    u = np.asarray(x, np.float64)
    states = _loop(da, u[..., None] * db, np.asarray(resets), np.zeros((u.shape[1], *a.shape)))
    return 2 * np.sum(states * c, axis=-1).real + np.asarray(p["D"]) * u


@pytest.mark.parametrize(
    "kind, options",
    [("s5", {"discretization": "zoh"}), ("s5", {"discretization": "bilinear"}), ("s4d", {})],
)
def test_ssm_layers_compute_the_recurrence_of_their_parameters(kind, options):
    layer = _layer(kind, **options)
    params = _init(layer)
    x, resets = _data(64, seed=8, p_reset=0.1)
    _, y = jax.jit(layer.apply)(params, layer.initialize_carry(B), x, resets)
    p = params["params"]
    if kind == "s5":
        expected = _s5_reference(p, x, resets, options["discretization"])
    else:
        expected = _s4d_reference(p, x, resets)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-4, rtol=1e-4)


# -- the sequence-layer contract, every kind ----------------------------------------------------


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
    _, y_ignored = apply(params, carry_a, xb, jnp.zeros_like(rb))  # the carry matters
    assert _max_err(y_ignored, y_b) > 1e-3


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
        c, y_t = layer.apply(params, c, x_t[None], r_t[None])
        return c, y_t[0]

    scan = jax.jit(lambda c, xs: jax.lax.scan(step, c, xs))
    c_steps, y_steps = scan(layer.initialize_carry(B), (x, resets))
    assert _max_err(y_steps, y) <= 1e-5
    assert _max_err(c_steps, carry) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_finite_and_reach_every_parameter(kind):
    stack = SequenceStack(kind, d_model=H, num_layers=2, layer_kwargs={"state_size": P})
    x, resets = _data(32, seed=6, p_reset=0.1)
    carry = stack.initialize_carry(B)
    params = jax.jit(stack.init)(jax.random.key(0), carry, x, resets)

    def loss(p):
        return jnp.sum(stack.apply(p, carry, x, resets)[1] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert all(float(jnp.abs(g).sum()) > 0 for g in leaves)


def test_hippo_normal_part_eigenvalues():
    n = 8
    lam, v = hippo_normal_eig(n)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    p = np.sqrt(np.arange(n) + 0.5)
    s = hippo_legs(n) + np.outer(p, p)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T, s, atol=1e-10)
    np.testing.assert_allclose([hippo_legs(3)[2, 0], hippo_legs(3)[1, 1]], [-np.sqrt(5), -2])


def test_s5_blocks_tile_the_hippo_block_and_stay_stable():
    layer = _layer("s5", blocks=4, discretization="bilinear")
    params = _init(layer)
    p = params["params"]
    assert p["log_step"].shape == (P // 2,) and p["lambda_re"].shape == (P // 2,)
    lam_block, _ = hippo_normal_eig(P // 4)  # 4 blocks of a P/4 HiPPO, half of each kept
    np.testing.assert_allclose(np.asarray(p["lambda_im"]), np.tile(lam_block.imag[: P // 8], 4))
    x, resets = _data(16)
    _, y = jax.jit(layer.apply)(params, layer.initialize_carry(B), x, resets)
    assert y.shape == (16, B, H) and bool(jnp.isfinite(y).all())
    a_bar, _ = layer.apply(params, method=layer.discretize)
    assert float(jnp.abs(a_bar).max()) < 1.0  # stable: Re(Lambda) < 0
