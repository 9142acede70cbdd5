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
    x = np.linspace(-1, 1, 20001)

    @jax.jit
    def density():
        b, c = _random_c(jax.random.key(0))
        return b, fourier_density(c, jnp.broadcast_to(jnp.asarray(x, jnp.float32), (5, x.size)))

    b, p = (np.asarray(v) for v in density())
    assert float(p.min()) >= -1e-6
    # trapezoid in float64: spectrally accurate for a smooth periodic density
    integral = np.trapezoid(np.asarray(p, np.float64), x, axis=-1)
    np.testing.assert_allclose(integral, 1.0, atol=1e-6)
    j = np.arange(b.shape[-1])
    modulus = np.abs(np.sum(b[:, None, :] * np.exp(1j * np.pi * j * x[::500, None]), -1)) ** 2
    np.testing.assert_allclose(
        p[:, ::500], modulus / (2 * np.sum(np.abs(b) ** 2, -1, keepdims=True)), atol=1e-4
    )


def test_autocorrelation_by_hand():
    b = jnp.array([1.0 + 0j, 2.0 - 1j, 0.5j])
    a = autocorrelation(b)
    # a_0 = sum |b|^2; a_1 = b1 conj(b0) + b2 conj(b1); a_2 = b2 conj(b0)
    expected = [1 + 5 + 0.25, (2 - 1j) + 0.5j * (2 + 1j), 0.5j]
    np.testing.assert_allclose(a, expected, atol=1e-6)


def test_cdf_endpoints_derivative_and_inverse_sampling():
    edges = np.linspace(-1, 1, 9)

    @jax.jit
    def cdf_checks():
        _, c = _random_c(jax.random.key(1))
        ends = fourier_cdf(c, jnp.broadcast_to(jnp.array([-1.0, 1.0]), (5, 2)))
        x = jnp.broadcast_to(jnp.linspace(-0.95, 0.95, 39), (5, 39))
        h = 1e-3
        slope = (fourier_cdf(c, x + h) - fourier_cdf(c, x - h)) / (2 * h)
        # bisection inverts the CDF; over many draws the samples follow the density
        keys = jax.random.split(jax.random.key(2), 4000)
        samples = jax.vmap(lambda k: fourier_sample(c[0], k))(keys)
        at_edges = fourier_cdf(c[0], jnp.asarray(edges, jnp.float32))
        return ends, slope, fourier_density(c, x), samples, at_edges

    ends, slope, density, samples, at_edges = (np.asarray(v) for v in cdf_checks())
    np.testing.assert_allclose(ends[:, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(ends[:, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(slope, density, atol=2e-3)
    assert float(samples.min()) >= -1 and float(samples.max()) <= 1
    hist, _ = np.histogram(samples, bins=8, range=(-1, 1))
    np.testing.assert_allclose(hist / 4000, np.diff(at_edges), atol=0.03)


def test_fourier_head_probabilities_sum_to_one_and_order_permutes_actions():
    order = tuple(np.random.default_rng(0).permutation(18))

    @jax.jit
    def heads():
        x = jax.random.normal(jax.random.key(3), (7, 16))
        head = FourierHead(num_bins=18, num_frequencies=8)
        params = head.init(jax.random.key(4), x)
        dist = head.apply(params, x)
        permuted = FourierHead(18, 8, order=order).apply(params, x)
        density = fourier_density(dist.coefficients, jnp.asarray(bin_centers(18), jnp.float32))
        return (
            dist.probs(),
            dist.logits,
            dist.aux_loss(),
            permuted.logits,
            density,
            dist.coefficients,
        )

    probs, logits, aux, permuted, density, coefficients = (np.asarray(v) for v in heads())
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert logits.shape == (7, 18) and float(aux) > 0
    # action order[i] gets bin i's probability
    np.testing.assert_allclose(permuted[:, np.array(order)], logits, atol=1e-6)
    # the distribution carries the density it was read from: its pmf is that density at the
    # bin centres, normalized (+ the 1e-5 floor of the logits)
    pmf = density / density.sum(-1, keepdims=True)
    assert coefficients.shape == (7, 9)
    np.testing.assert_allclose(np.exp(logits), pmf + 1e-5, rtol=1e-4)


def test_fourier_head_continuous_bins_and_log_prob():
    head = head_for(Box.make(-2.0, 2.0, (3,)), "fourier", fourier_bins=32, fourier_frequencies=6)

    @jax.jit
    def outputs():
        x = jax.random.normal(jax.random.key(5), (6, 16))
        dist = head.apply(head.init(jax.random.key(6), x), x)
        # the density behind the bins: the action range [-2, 2] sits on [-0.9, 0.9]
        centres = jnp.asarray(0.9 * bin_centers(32), jnp.float32)
        density = fourier_density(dist.coefficients, centres)
        a = dist.sample(jax.random.key(7))
        return dist.logits, dist.coefficients, density, a, dist.bin_index(a), dist.log_prob(a)

    logits, coefficients, density, a, index, log_prob = (np.asarray(v) for v in outputs())
    assert logits.shape == (6, 3, 32)
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, atol=1e-3)  # +1e-5 floor
    assert coefficients.shape == (6, 3, 7)
    np.testing.assert_allclose(
        np.exp(logits), density / density.sum(-1, keepdims=True) + 1e-5, rtol=1e-4
    )
    assert a.shape == (6, 3) and float(np.abs(a).max()) <= 2.0
    centres = -2.0 + (np.arange(32) + 0.5) * (4.0 / 32)
    assert np.all(np.min(np.abs(a[..., None] - centres), -1) < 1e-5)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(logp, index[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(log_prob, expected, atol=1e-5)


def test_bin_centers():
    np.testing.assert_allclose(bin_centers(4), [-0.75, -0.25, 0.25, 0.75])


@pytest.mark.parametrize("kind", ["gaussian", "tanh_gaussian", "deterministic", "fourier"])
def test_continuous_heads_sample_in_range_and_score_their_samples(kind):
    space = Box.make(-1.0, 3.0, (2,))
    head = head_for(space, kind)

    @jax.jit
    def sample_and_score():
        x = jax.random.normal(jax.random.key(8), (5, 8))
        dist = head.apply(head.init(jax.random.key(9), x), x)
        a = dist.sample(jax.random.key(10))
        return a, dist.log_prob(a), dist.entropy()

    a, log_prob, entropy = (np.asarray(v) for v in sample_and_score())
    assert a.shape == (5, 2)
    assert np.isfinite(log_prob).all() and entropy.shape == (5,)
    if kind != "gaussian":  # the plain Gaussian relies on the ClipAction wrapper
        assert float(a.min()) >= -1.0 and float(a.max()) <= 3.0


def test_tanh_gaussian_log_prob_is_a_density_on_the_interval():
    head = head_for(Box.make(-1.0, 3.0, (1,)), "tanh_gaussian")

    @jax.jit
    def density():
        x = jnp.ones((1, 4))
        dist = head.apply(head.init(jax.random.key(11), x), x)
        grid = jnp.linspace(-1.0, 3.0, 40001)[1:-1, None]
        return jnp.exp(jax.vmap(lambda a: dist.log_prob(a[None])[0])(grid))

    np.testing.assert_allclose(np.sum(np.asarray(density())) * (4.0 / 40000), 1.0, atol=2e-3)


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
    draws = jax.jit(jax.vmap(cat.sample))(jax.random.split(jax.random.key(3), 8000))
    np.testing.assert_allclose(np.bincount(np.asarray(draws), minlength=3) / 8000, p, atol=0.02)


def test_fourier_regularizer_by_hand():
    """The penalty is regularization * 2 * sum_k 2 pi^2 k^2 |c_k|^2 of the normalized
    coefficients c = a / a_0 (scale-free: scaling b leaves it unchanged)."""
    x = jnp.ones((1, 4))
    head = FourierHead(num_bins=8, num_frequencies=3, regularization=0.5)

    @jax.jit
    def penalties():
        params = head.init(jax.random.key(12), x)
        dist = head.apply(params, x)
        scaled = head.apply(jax.tree.map(lambda w: 3.0 * w, params), x)
        return dist.coefficients[0], dist.aux_loss(), scaled.aux_loss()

    c, penalty, scaled = (np.asarray(v) for v in penalties())
    expected = 0.5 * 2 * sum(2 * np.pi**2 * k**2 * abs(c[k]) ** 2 for k in range(4))
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)
    np.testing.assert_allclose(float(scaled), expected, rtol=1e-4)
