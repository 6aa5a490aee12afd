"""The paper's losses, per example, so tf.distribute can average them over the global batch.

Hole MSE, `L(x, Mc) = || Mc * (C(x, Mc) - x) ||^2`, normalised as a mean over every element of
the masked difference: each example's loss is the sum of squared errors inside the hole divided
by H * W * 3 (pixels outside the hole count as zeros in the denominator), and the batch loss is
the mean over examples. That is Torch's `nn.MSECriterion` (size-averaged) applied to the masked
images, the criterion of the authors' framework, and it is the scale on which the paper's
alpha = 0.0004 weighs the GAN loss. A per-hole-pixel mean would be about 4 to 7 times larger
for the paper's holes and would make alpha weigh the GAN term correspondingly less.

GAN losses: binary cross-entropy on the discriminator's probabilities. The discriminators
learn real = 1, completed = 0; the completion network minimises -log D(completed) (the usual
non-saturating form of the paper's log(1 - D(completed)) term).
"""

import keras
import tensorflow as tf


def hole_mse(completed, target, mask) -> tf.Tensor:
    """Per-example weighted MSE inside the hole: sum of squared hole errors / (H * W * 3)."""
    squared = tf.square(mask * (tf.cast(completed, tf.float32) - target))
    return tf.reduce_mean(squared, axis=[1, 2, 3])


def _bce(label: float, probability) -> tf.Tensor:
    probability = tf.reshape(tf.cast(probability, tf.float32), [-1])
    return keras.ops.binary_crossentropy(tf.fill(tf.shape(probability), label), probability)


def discriminator_loss(real_probability, fake_probability) -> tf.Tensor:
    """Per-example BCE of the discriminators: real images -> 1, completed images -> 0."""
    return _bce(1.0, real_probability) + _bce(0.0, fake_probability)


def completion_gan_loss(fake_probability) -> tf.Tensor:
    """Per-example GAN loss of the completion network: -log D(completed)."""
    return _bce(1.0, fake_probability)
