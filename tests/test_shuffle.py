"""seqrl.shuffle.permutation: a random permutation that XLA:CPU sorts quickly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqrl import shuffle


@pytest.mark.parametrize("n", [1, 2, 5, 512, 1000])
def test_permutation_is_a_permutation(n):
    perm = np.asarray(jax.jit(shuffle.permutation, static_argnums=1)(jax.random.PRNGKey(n), n))
    assert perm.dtype == np.int32 and sorted(perm.tolist()) == list(range(n))


def test_permutation_is_uniform():
    """All 24 orders of 4 items equally often (chi-square), and every item of 512 as likely in
    every position (a key keeps 23 random bits beside a 9-bit index, so two rounds run)."""
    draws = jax.jit(jax.vmap(lambda k: shuffle.permutation(k, 4)))(
        jax.random.split(jax.random.PRNGKey(0), 24_000)
    )
    codes = np.asarray(draws) @ np.array([64, 16, 4, 1])
    counts = np.unique(codes, return_counts=True)[1]
    assert counts.size == 24
    chi2 = ((counts - 1000) ** 2 / 1000).sum()
    assert chi2 < 49.7, chi2  # 23 degrees of freedom: p = 0.001
    big = np.asarray(
        jax.jit(jax.vmap(lambda k: shuffle.permutation(k, 512)))(
            jax.random.split(jax.random.PRNGKey(1), 2_000)
        )
    )
    # where item 0 lands, and the mean position of each item: uniform over 0..511
    mean_position = np.argsort(big, axis=1).mean(axis=0)
    sigma = 147.8 / np.sqrt(2_000)  # std of a position uniform on 0..511, over 2,000 draws
    assert np.abs(mean_position - 255.5).max() < 5 * sigma
    first = np.bincount(big[:, 0] // 64, minlength=8)
    assert (np.abs(first - 250) < 60).all(), first


def test_permutation_differs_from_key_to_key():
    a = shuffle.permutation(jax.random.PRNGKey(0), 512)
    b = shuffle.permutation(jax.random.PRNGKey(1), 512)
    assert not jnp.array_equal(a, b)
