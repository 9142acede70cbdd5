"""Action heads: the Fourier head's density, CDF and sampling; every head's distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl.envs.spaces import Box, Discrete
from seqrl.heads import (
    Categorical,
    FourierHead,
    autocorrelation,
    bin_centers,
    fourier_cdf,
    fourier_density,
    fourier_sample,
    head_for,
)


def _random_c(key, batch=5, n=9):
    kr, ki = jax.random.split(key)
    b = jax.random.normal(kr, (batch, n)) + 1j * jax.random.normal(ki, (batch, n))
    a = autocorrelation(b)
    return b, a / jnp.real(a[..., :1])


def test_density_is_nonnegative_integrates_to_one_and_matches_the_modulus_form():
    b, c = _random_c(jax.random.key(0))
    x = jnp.linspace(-1, 1, 20001)
    p = fourier_density(c, jnp.broadcast_to(x, (5, x.size)))
    assert float(p.min()) >= -1e-6
    # trapezoid in float64: spectrally accurate for a smooth periodic density
    integral = np.trapezoid(np.asarray(p, np.float64), np.asarray(x, np.float64), axis=-1)
    np.testing.assert_allclose(integral, 1.0, atol=1e-6)
    j = jnp.arange(b.shape[-1])
    modulus = jnp.abs(jnp.sum(b[:, None, :] * jnp.exp(1j * jnp.pi * j * x[::500, None]), -1)) ** 2
    np.testing.assert_allclose(
        p[:, ::500], modulus / (2 * jnp.sum(jnp.abs(b) ** 2, -1, keepdims=True)), atol=1e-4
    )


def test_autocorrelation_by_hand():
    b = jnp.array([1.0 + 0j, 2.0 - 1j, 0.5j])
    a = autocorrelation(b)
    # a_0 = sum |b|^2; a_1 = b1 conj(b0) + b2 conj(b1); a_2 = b2 conj(b0)
    expected = [1 + 5 + 0.25, (2 - 1j) + 0.5j * (2 + 1j), 0.5j]
    np.testing.assert_allclose(a, expected, atol=1e-6)


def test_cdf_endpoints_derivative_and_inverse_sampling():
    _, c = _random_c(jax.random.key(1))
    ends = fourier_cdf(c, jnp.broadcast_to(jnp.array([-1.0, 1.0]), (5, 2)))
    np.testing.assert_allclose(ends[:, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(ends[:, 1], 1.0, atol=1e-6)
    x = jnp.broadcast_to(jnp.linspace(-0.95, 0.95, 39), (5, 39))
    h = 1e-3
    slope = (fourier_cdf(c, x + h) - fourier_cdf(c, x - h)) / (2 * h)
    np.testing.assert_allclose(slope, fourier_density(c, x), atol=2e-3)
    # bisection inverts the CDF; over many draws the samples follow the density
    keys = jax.random.split(jax.random.key(2), 4000)
    samples = jax.vmap(lambda k: fourier_sample(c[0], k))(keys)
    assert float(samples.min()) >= -1 and float(samples.max()) <= 1
    hist, edges = np.histogram(np.asarray(samples), bins=8, range=(-1, 1))
    expected = np.diff(np.asarray(fourier_cdf(c[0], jnp.asarray(edges))))
    np.testing.assert_allclose(hist / 4000, expected, atol=0.03)


def test_fourier_head_probabilities_sum_to_one_and_order_permutes_actions():
    x = jax.random.normal(jax.random.key(3), (7, 16))
    head = FourierHead(num_bins=18, num_frequencies=8)
    params = head.init(jax.random.key(4), x)
    dist = head.apply(params, x)
    np.testing.assert_allclose(dist.probs().sum(-1), 1.0, atol=1e-5)
    assert dist.logits.shape == (7, 18) and float(dist.aux_loss()) > 0
    order = tuple(np.random.default_rng(0).permutation(18))
    permuted = FourierHead(18, 8, order=order).apply(params, x)
    # action order[i] gets bin i's probability
    np.testing.assert_allclose(permuted.logits[:, np.array(order)], dist.logits, atol=1e-6)
    # the distribution carries the density it was read from: its pmf is that density at the
    # bin centres, normalized (+ the 1e-5 floor of the logits)
    density = fourier_density(dist.coefficients, jnp.asarray(bin_centers(18), jnp.float32))
    pmf = density / density.sum(-1, keepdims=True)
    assert dist.coefficients.shape == (7, 9)
    np.testing.assert_allclose(jnp.exp(dist.logits), pmf + 1e-5, rtol=1e-4)


def test_fourier_head_continuous_bins_and_log_prob():
    x = jax.random.normal(jax.random.key(5), (6, 16))
    head = head_for(Box.make(-2.0, 2.0, (3,)), "fourier", fourier_bins=32, fourier_frequencies=6)
    params = head.init(jax.random.key(6), x)
    dist = head.apply(params, x)
    assert dist.logits.shape == (6, 3, 32)
    np.testing.assert_allclose(jnp.exp(dist.logits).sum(-1), 1.0, atol=1e-3)  # +1e-5 floor
    # the density behind the bins: the action range [-2, 2] sits on [-0.9, 0.9]
    density = fourier_density(dist.coefficients, jnp.asarray(0.9 * bin_centers(32), jnp.float32))
    assert dist.coefficients.shape == (6, 3, 7)
    np.testing.assert_allclose(
        jnp.exp(dist.logits), density / density.sum(-1, keepdims=True) + 1e-5, rtol=1e-4
    )
    a = dist.sample(jax.random.key(7))
    assert a.shape == (6, 3) and float(jnp.abs(a).max()) <= 2.0
    centres = -2.0 + (jnp.arange(32) + 0.5) * (4.0 / 32)
    assert bool(jnp.all(jnp.min(jnp.abs(a[..., None] - centres), -1) < 1e-5))
    logp = jax.nn.log_softmax(dist.logits)
    index = dist.bin_index(a)
    expected = jnp.take_along_axis(logp, index[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(dist.log_prob(a), expected, atol=1e-5)


def test_bin_centers():
    np.testing.assert_allclose(bin_centers(4), [-0.75, -0.25, 0.25, 0.75])


@pytest.mark.parametrize("kind", ["gaussian", "tanh_gaussian", "deterministic", "fourier"])
def test_continuous_heads_sample_in_range_and_score_their_samples(kind):
    space = Box.make(-1.0, 3.0, (2,))
    head = head_for(space, kind)
    x = jax.random.normal(jax.random.key(8), (5, 8))
    dist = head.apply(head.init(jax.random.key(9), x), x)
    a = dist.sample(jax.random.key(10))
    assert a.shape == (5, 2)
    assert bool(jnp.isfinite(dist.log_prob(a)).all()) and dist.entropy().shape == (5,)
    if kind != "gaussian":  # the plain Gaussian relies on the ClipAction wrapper
        assert float(a.min()) >= -1.0 and float(a.max()) <= 3.0


def test_tanh_gaussian_log_prob_is_a_density_on_the_interval():
    head = head_for(Box.make(-1.0, 3.0, (1,)), "tanh_gaussian")
    x = jnp.ones((1, 4))
    dist = head.apply(head.init(jax.random.key(11), x), x)
    grid = jnp.linspace(-1.0, 3.0, 40001)[1:-1, None]
    density = jnp.exp(jax.vmap(lambda a: dist.log_prob(a[None])[0])(grid))
    np.testing.assert_allclose(jnp.sum(density) * (4.0 / 40000), 1.0, atol=2e-3)


def test_head_kind_must_fit_the_action_space():
    with pytest.raises(ValueError, match="needs continuous actions"):
        head_for(Discrete(3), "tanh_gaussian")
    with pytest.raises(ValueError, match="needs discrete actions"):
        head_for(Box.make(-1, 1, (2,)), "categorical")


def test_categorical_log_prob_matches_log_softmax_and_rejects_out_of_range_actions():
    logits = jnp.array([[1.0, 2.0, 3.0], [0.0, -jnp.inf, 1.0]])
    dist = Categorical(logits)
    expected = jax.nn.log_softmax(logits)
    np.testing.assert_allclose(dist.log_prob(jnp.array([2, 0])), [expected[0, 2], expected[1, 0]])
    # a masked-out action next to the chosen one leaves it finite; the gradient too
    grad = jax.grad(lambda x: Categorical(x).log_prob(jnp.array([2, 2])).sum())(logits)
    assert bool(jnp.isfinite(grad).all())
    # no probability outside [0, n): NaN (the loop stops on it), never a silent 0
    assert bool(jnp.isnan(dist.log_prob(jnp.array([3, -1]))).all())


def test_gaussian_and_categorical_scores_by_hand():
    """log N(a; mu, sigma) = -(a - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2 per dimension,
    entropy log sigma + (1 + log 2 pi) / 2; a categorical's entropy -sum p log p."""
    from seqrl.heads import DiagGaussian

    dist = DiagGaussian(jnp.array([[0.5, -1.0]]), jnp.log(jnp.array([[2.0, 0.5]])))
    a = jnp.array([[1.5, -1.0]])
    expected = (-(1.0**2) / 8 - np.log(2.0)) + (0.0 - np.log(0.5)) - np.log(2 * np.pi)
    np.testing.assert_allclose(dist.log_prob(a), [expected], rtol=1e-6)
    np.testing.assert_allclose(dist.entropy(), [np.log(2.0 * 0.5) + 1 + np.log(2 * np.pi)])
    p = np.array([0.7, 0.2, 0.1])
    cat = Categorical(jnp.log(jnp.asarray(p)))
    np.testing.assert_allclose(cat.entropy(), -(p * np.log(p)).sum(), rtol=1e-6)
    np.testing.assert_allclose(cat.log_prob(jnp.array(1)), np.log(0.2), rtol=1e-6)
    assert int(cat.mode()) == 0


def test_fourier_regularizer_by_hand():
    """The penalty is regularization * 2 * sum_k 2 pi^2 k^2 |c_k|^2 of the normalized
    coefficients c = a / a_0 (scale-free: scaling b leaves it unchanged)."""
    x = jnp.ones((1, 4))
    head = FourierHead(num_bins=8, num_frequencies=3, regularization=0.5)
    params = head.init(jax.random.key(12), x)
    dist = head.apply(params, x)
    c = np.asarray(dist.coefficients[0])
    expected = 0.5 * 2 * sum(2 * np.pi**2 * k**2 * abs(c[k]) ** 2 for k in range(4))
    np.testing.assert_allclose(float(dist.aux_loss()), expected, rtol=1e-5)
    scaled = jax.tree.map(lambda w: 3.0 * w, params)
    np.testing.assert_allclose(float(head.apply(scaled, x).aux_loss()), expected, rtol=1e-4)
