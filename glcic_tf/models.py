"""The paper's networks (Tables 1 and 2) in Keras, and the two functions around the completion network.

The tables are glcic_tf.architecture's, the single source of the architecture: the builders only read them.
`width` scales every hidden channel count (1.0 is the paper); input sizes are parameters
whose defaults are the paper's, so tests and demos build the same code at a smaller scale.
"""

from typing import Sequence

import keras
import tensorflow as tf

from glcic_tf.architecture import (  # noqa: F401 (the tables, read here and through models by the rest)
    PLACES2_MEAN_PIXEL,
    BN_EPSILON,
    BN_MOMENTUM,
    ConvSpec,
    COMPLETION_NETWORK,
    DISCRIMINATOR_KERNEL,
    DISCRIMINATOR_STRIDE,
    LOCAL_DISCRIMINATOR_FILTERS,
    GLOBAL_DISCRIMINATOR_FILTERS,
    DISCRIMINATOR_FC_UNITS,
    GLOBAL_SIZE,
    LOCAL_SIZE,
    SIZE_MULTIPLE,
    receptive_radius,
    completion_flops,
    discriminator_flops,
    scaled_filters,
)


class BatchNormalization(keras.layers.BatchNormalization):
    """Keras's BatchNormalization, the same function and variables, whose training-mode step
    runs TensorFlow's fused kernel (FusedBatchNormV3 and its gradient) wherever the statistics
    are one replica's: on one device, or not synchronized.

    Why: Keras 3 computes it as separate mean, variance and normalisation ops (and, when
    synchronized, an all-reduce even of one replica); the fused kernel took half the time
    forward + backward with oneDNN (18.3 against 31.2 ms at 16x128x128x16) and 0.8x with Eigen.
    Synchronized across several replicas, and in inference, it is Keras's own call.
    """

    def _fused_applies(self, inputs, training, mask) -> bool:
        if not (training and self.trainable) or mask is not None or self.renorm or not (self.center and self.scale):
            return False
        if len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return False
        context = tf.distribute.get_replica_context()
        if context is None:  # cross-replica context: Keras's own
            return False
        return not self.synchronized or context.num_replicas_in_sync == 1

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        inputs = tf.cast(inputs, tf.float32)  # as Keras's: statistics in float32 under mixed precision
        outputs, mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32), epsilon=self.epsilon, is_training=True
        )
        # The kernel's variance has Bessel's correction (n / (n - 1)); Keras keeps the plain one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = corrected_variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


def _batchnorm_relu(x, name: str):
    # synchronized: under tf.distribute the statistics are those of the global batch, so N
    # replicas train like one device with the same batch; on one replica it is the fused kernel
    # (BatchNormalization above), whatever scope the network was built in.
    x = BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True, name=f"{name}_bn"
    )(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def completion_network(width: float = 1.0, name: str = "completion_network") -> keras.Model:
    """Table 1 as a Keras functional model: (B, H, W, 4) -> (B, H, W, 3) in [0, 1].

    The input is `completion_input(image, mask)`. H and W may be any multiples of 4 (the
    network is fully convolutional); other sizes must be padded first.
    """
    inputs = keras.Input((None, None, 4), name="masked_image_and_mask")
    x = inputs
    last = len(COMPLETION_NETWORK)
    for index, spec in enumerate(COMPLETION_NETWORK, start=1):
        layer_name = f"{spec.kind}{index}"
        if index == last:
            # The output layer has no BatchNorm, so it keeps its bias; float32 under mixed precision.
            x = keras.layers.Conv2D(3, spec.kernel, padding="same", dtype="float32", name="output_conv")(x)
            x = keras.layers.Activation("sigmoid", dtype="float32", name="output_sigmoid")(x)
            break
        filters = scaled_filters(spec.filters, width)
        if spec.kind == "deconv":
            # "same" at kernel 4, stride 2 pads 1 on every side: Torch's SpatialFullConvolution(4, 2, 1).
            layer = keras.layers.Conv2DTranspose(
                filters, spec.kernel, strides=spec.stride, padding="same", use_bias=False, name=layer_name
            )
        else:
            # Torch pads (kernel - 1) / 2 * dilation on every side. Keras's "same" does too at
            # stride 1, but at stride 2 on an even size it pads only the bottom and right, which
            # shifts the output by a pixel: strided rows are padded explicitly, as the authors'.
            padding = "same"
            if spec.stride > 1:
                x = keras.layers.ZeroPadding2D((spec.kernel - 1) // 2, name=f"{layer_name}_pad")(x)
                padding = "valid"
            layer = keras.layers.Conv2D(
                filters,
                spec.kernel,
                strides=spec.stride,
                dilation_rate=spec.dilation,
                padding=padding,
                use_bias=False,  # BatchNorm's offset makes a bias redundant
                name=layer_name,
            )
        x = _batchnorm_relu(layer(x), layer_name)
    return keras.Model(inputs, x, name=name)


def _context_discriminator(size: int, filters: Sequence[int], width: float, name: str) -> keras.Model:
    """One branch of Table 2: strided 5x5 convs, then FC 1024 (followed by a ReLU, which Table 2 does not give: see docs/design.md)."""
    inputs = keras.Input((size, size, 3), name=f"{name}_input")
    x = inputs
    for index, channels in enumerate(filters, start=1):
        x = keras.layers.Conv2D(
            scaled_filters(channels, width),
            DISCRIMINATOR_KERNEL,
            strides=DISCRIMINATOR_STRIDE,
            padding="same",
            use_bias=False,
            name=f"conv{index}",
        )(x)
        x = _batchnorm_relu(x, f"conv{index}")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(scaled_filters(DISCRIMINATOR_FC_UNITS, width), activation="relu", name="fc")(x)
    return keras.Model(inputs, x, name=name)


def local_discriminator(local_size: int = LOCAL_SIZE, width: float = 1.0) -> keras.Model:
    """The local context discriminator of Table 2: (B, 128, 128, 3) -> (B, 1024) features."""
    return _context_discriminator(local_size, LOCAL_DISCRIMINATOR_FILTERS, width, "local_discriminator")


def global_discriminator(global_size: int = GLOBAL_SIZE, width: float = 1.0) -> keras.Model:
    """The global context discriminator of Table 2: (B, 256, 256, 3) -> (B, 1024) features."""
    return _context_discriminator(global_size, GLOBAL_DISCRIMINATOR_FILTERS, width, "global_discriminator")


def discriminator(
    global_size: int = GLOBAL_SIZE, local_size: int = LOCAL_SIZE, width: float = 1.0, name: str = "discriminator"
) -> keras.Model:
    """Both context discriminators joined: [global image, local patch] -> logit of P(real), (B, 1).

    As in the paper, the two 1024-d feature vectors are concatenated (local first) and one
    fully connected layer gives the probability that the image is real; the paper's sigmoid is
    left to the losses (`glcic_tf.losses`, from logits) and to `real_probability`, because a
    sigmoid followed by a clipped log loses the completion network's gradient exactly when the
    discriminator is confident.
    """
    global_image = keras.Input((global_size, global_size, 3), name="global_image")
    local_patch = keras.Input((local_size, local_size, 3), name="local_patch")
    features = keras.layers.Concatenate(name="concatenation")(
        [local_discriminator(local_size, width)(local_patch), global_discriminator(global_size, width)(global_image)]
    )
    logit = keras.layers.Dense(1, dtype="float32", name="real_logit")(features)
    return keras.Model([global_image, local_patch], logit, name=name)


def real_probability(logit) -> tf.Tensor:
    """The discriminator's probability that an image is real: the paper's sigmoid on its logit."""
    return tf.sigmoid(tf.cast(logit, tf.float32))


def completion_input(image, mask, mean_pixel: Sequence[float] = PLACES2_MEAN_PIXEL) -> tf.Tensor:
    """The completion network's input: the hole filled with the mean pixel, plus the hole channel.

    image: (..., H, W, 3) in [0, 1]; mask: (..., H, W, 1), 1 inside the hole. The image is
    centred on the mean first, so the hole holds 0: the paper's "fill with the mean pixel",
    shifted by the mean, which is the authors' released convention and lets their weights load.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    mask = tf.convert_to_tensor(mask, tf.float32)
    centred = (image - tf.constant(mean_pixel, tf.float32)) * (1.0 - mask)
    return tf.concat([centred, mask], axis=-1)


def composite(completed, image, mask) -> tf.Tensor:
    """The network's pixels inside the hole (mask > 0.5), the input's own pixels everywhere else.

    Pixels outside the hole come back bit-identical to `image`.
    """
    completed = tf.convert_to_tensor(completed, tf.float32)
    image = tf.convert_to_tensor(image, tf.float32)
    return tf.where(tf.convert_to_tensor(mask) > 0.5, completed, image)
