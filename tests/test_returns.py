"""GAE against values computed by hand, with a termination and a truncation."""

import jax.numpy as jnp
import numpy as np

from seqrl.returns import gae


def test_gae_terminated_and_truncated_by_hand():
    gamma, lam = 0.9, 0.5
    # One env, 4 steps: the episode terminates at t=1, a new one is truncated at t=3.
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
    values = jnp.array([0.5, 1.0, 1.5, 2.0])
    # V of the observation each step led to: at t=1 the terminal obs (must be ignored), at
    # t=3 the obs the time limit cut off (must be bootstrapped from).
    next_values = jnp.array([1.0, 9.0, 2.0, 3.0])
    terminated = jnp.array([0, 1, 0, 0], bool)
    done = jnp.array([0, 1, 0, 1], bool)

    advantages, targets = gae(rewards, values, next_values, terminated, done, gamma, lam)

    d0 = 1 + 0.9 * 1.0 - 0.5  # 1.4
    d1 = 2 + 0.0 - 1.0  # 1.0 (terminated: no bootstrap)
    d2 = 3 + 0.9 * 2.0 - 1.5  # 3.3
    d3 = 4 + 0.9 * 3.0 - 2.0  # 4.7 (truncated: bootstrap from the final observation)
    a3 = d3
    a2 = d2 + 0.45 * a3  # 5.415
    a1 = d1  # the recursion stops at the episode boundary
    a0 = d0 + 0.45 * a1  # 1.85
    np.testing.assert_allclose(advantages, [a0, a1, a2, a3], rtol=1e-6)
    np.testing.assert_allclose(targets, np.array([a0, a1, a2, a3]) + values, rtol=1e-6)


def test_gae_batched_matches_per_env():
    rng = np.random.default_rng(0)
    T, B = 7, 3
    r, v, nv = (jnp.asarray(rng.normal(size=(T, B)), jnp.float32) for _ in range(3))
    term = jnp.asarray(rng.random((T, B)) < 0.2)
    done = jnp.logical_or(term, jnp.asarray(rng.random((T, B)) < 0.2))
    adv, _ = gae(r, v, nv, term, done, 0.99, 0.95)
    for b in range(B):
        adv_b, _ = gae(r[:, b], v[:, b], nv[:, b], term[:, b], done[:, b], 0.99, 0.95)
        np.testing.assert_allclose(adv[:, b], adv_b, rtol=1e-6)


def test_gae_lambda_one_no_dones_is_discounted_return_minus_value():
    r = jnp.array([1.0, 1.0, 1.0])
    v = jnp.array([0.2, 0.1, 0.3])
    nv = jnp.array([0.1, 0.3, 5.0])
    zeros = jnp.zeros(3, bool)
    adv, targets = gae(r, v, nv, zeros, zeros, 0.5, 1.0)
    expected_returns = [1 + 0.5 + 0.25 + 0.125 * 5, 1 + 0.5 + 0.25 * 5, 1 + 0.5 * 5]
    np.testing.assert_allclose(targets, expected_returns, rtol=1e-6)
