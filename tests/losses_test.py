"""The paper's losses, each checked against a value worked out by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import losses


def _softplus(x):
    return math.log1p(math.exp(x))


def test_hole_mse_counts_the_hole_only_and_divides_by_every_element():
    target = np.zeros((2, 2, 2, 3), np.float32)
    completed = np.full((2, 2, 2, 3), 0.9, np.float32)  # wrong everywhere outside the hole too
    completed[0, 0, 1] = [0.5, 0.2, 0.1]
    mask = np.zeros((2, 2, 2, 1), np.float32)
    mask[0, 0, 1] = 1.0  # example 0: one hole pixel; example 1: no hole
    # (0.5^2 + 0.2^2 + 0.1^2) / (H * W * 3) = 0.30 / 12
    np.testing.assert_allclose(losses.hole_mse(completed, target, mask).numpy(), [0.025, 0.0], rtol=1e-6)


def test_discriminator_loss_labels_real_images_1_and_completions_0():
    real_logit, fake_logit = np.array([[2.0]], np.float32), np.array([[-1.0]], np.float32)
    # -log sigmoid(2) - log(1 - sigmoid(-1)) = softplus(-2) + softplus(-1)
    expected = _softplus(-2.0) + _softplus(-1.0)
    assert losses.discriminator_loss(real_logit, fake_logit).numpy() == pytest.approx([expected], rel=1e-6)
    # The same logits with the roles swapped cost what a wrong discriminator should.
    assert losses.discriminator_loss(fake_logit, real_logit).numpy() == pytest.approx([_softplus(1.0) + _softplus(2.0)], rel=1e-6)


def test_completion_gan_loss_is_minus_log_d_of_the_completion():
    fake_logit = np.array([[-1.0], [3.0]], np.float32)
    # -log sigmoid(l) = softplus(-l): large when the discriminator calls the completion fake.
    np.testing.assert_allclose(losses.completion_gan_loss(fake_logit).numpy(), [_softplus(1.0), _softplus(-3.0)], rtol=1e-6)


@pytest.mark.parametrize("logit", [-30.0, -17.0, -5.0])
def test_completion_gan_gradient_does_not_vanish_when_the_discriminator_is_sure(logit):
    # d(-log sigmoid(l))/dl = -(1 - sigmoid(l)): about -1 for a confident discriminator. Through
    # a sigmoid and a clipped log it was exactly 0 from l = -17 down.
    fake_logit = tf.constant([[logit]])
    with tf.GradientTape() as tape:
        tape.watch(fake_logit)
        loss = losses.completion_gan_loss(fake_logit)
    gradient = float(tape.gradient(loss, fake_logit)[0, 0])
    assert gradient == pytest.approx(-1.0 / (1.0 + math.exp(logit)), rel=1e-6)
    assert np.isfinite(losses.discriminator_loss(-fake_logit, fake_logit).numpy()).all()


def test_joint_loss_is_mse_plus_alpha_times_gan():
    assert float(losses.joint_loss(tf.constant(0.01), tf.constant(2.0), 0.0004)) == pytest.approx(0.0108, rel=1e-6)
