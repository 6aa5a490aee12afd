"""The paper's losses, per example, so tf.distribute can average them over the global batch.

Hole MSE, `L(x, Mc) = || Mc * (C(x, Mc) - x) ||^2`, normalised as a mean over every element of
the masked difference: each example's loss is the sum of squared errors inside the hole divided
by H * W * 3 (pixels outside the hole count as zeros in the denominator), and the batch loss is
the mean over examples. That is Torch's `nn.MSECriterion` (size-averaged) applied to the masked
images, the criterion of the authors' framework, and it is the scale on which the paper's
alpha = 0.0004 weighs the GAN loss. A per-hole-pixel mean would be about 4 to 7 times larger
for the paper's holes and would make alpha weigh the GAN term correspondingly less.

GAN losses: binary cross-entropy of the discriminator's probability sigmoid(logit), computed
from the logit (`tf.nn.sigmoid_cross_entropy_with_logits`). The discriminators learn
real = 1, completed = 0; the completion network minimises -log D(completed) (the usual
non-saturating form of the paper's log(1 - D(completed)) term). On logits its gradient stays
-(1 - D) per example, about -1 when the discriminator is sure the completion is fake; on
clipped probabilities it was exactly 0 from logit -17 down, so a confident discriminator
(after phase 2) taught the completion network nothing.
"""

import tensorflow as tf


def hole_mse(completed, target, mask) -> tf.Tensor:
    """Per-example weighted MSE inside the hole: sum of squared hole errors / (H * W * 3)."""
    squared = tf.square(mask * (tf.cast(completed, tf.float32) - target))
    return tf.reduce_mean(squared, axis=[1, 2, 3])


def _sigmoid_cross_entropy(label: float, logit) -> tf.Tensor:
    """Per-example -log P(label) for the probability sigmoid(logit), stable for any logit."""
    logit = tf.reshape(tf.cast(logit, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logit), label), logits=logit)


def discriminator_loss(real_logit, fake_logit) -> tf.Tensor:
    """Per-example BCE of the discriminators: real images -> 1, completed images -> 0."""
    return _sigmoid_cross_entropy(1.0, real_logit) + _sigmoid_cross_entropy(0.0, fake_logit)


def completion_gan_loss(fake_logit) -> tf.Tensor:
    """Per-example GAN loss of the completion network: -log D(completed)."""
    return _sigmoid_cross_entropy(1.0, fake_logit)


def joint_loss(mse, gan, alpha: float) -> tf.Tensor:
    """The completion network's loss in phase 3: MSE + alpha * GAN (paper: alpha = 0.0004)."""
    return mse + alpha * gan
