"""The trained completion network run in TensorFlow on batches of any size: `Inpainter`.

It runs the network compiled once for every size (pad to a multiple of 4, run, crop back, put
the valid pixels back). Completing a photograph through it, or any other completer, on the
regions `glcic_tf.tiling` plans, with the paper's post-processing, is `glcic_tf.photos`' job.
"""

from typing import Optional, Sequence

import tensorflow as tf

from glcic_tf import folded, models, tiling as tilings


class Inpainter(tf.Module):
    """image (B, H, W, 3) in [0, 1] and mask (B, H, W, 1), 1 = hole -> completed image, any H and W.

    Compiled once with unknown batch, height and width, so a new size does not retrace. The
    image is padded to a multiple of 4 (its last row and column repeated), the network runs in
    inference mode, the result is cropped back and the input's pixels are put back outside the
    holes. A batch of more than `max_network_pixels` pixels in all (batch x height x width) is refused
    (InvalidArgumentError) before the network runs: it runs on the whole batch at once and needs
    about 670 bytes per pixel, so the bound is on the request, not on each image. The network runs with its BatchNorms folded
    into its convolutions (`glcic_tf.folded`: the same outputs, faster); `fold=False` runs the
    Keras network as it is (for comparisons). `precision` is one of folded.PRECISIONS: "auto"
    computes in bfloat16 where that is faster (processors with AMX), float32 elsewhere;
    `upsampling` one of folded.UPSAMPLINGS (default: the faster where this runs).
    """

    def __init__(
        self,
        network,
        mean_pixel: Sequence[float] = models.PLACES2_MEAN_PIXEL,
        max_network_pixels: int = tilings.MAX_NETWORK_PIXELS,
        fold: bool = True,
        precision: str = "float32",
        upsampling: Optional[str] = None,
    ):
        super().__init__()
        dtype = folded.compute_dtype(precision)
        self.network = folded.FoldedCompletionNetwork(network, upsampling=upsampling, dtype=dtype) if fold else network
        self.mean_pixel = tf.constant(mean_pixel, tf.float32)
        self.max_network_pixels = max_network_pixels

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([None, None, None, 1], tf.float32, name="mask"),
        ]
    )
    def __call__(self, image, mask):
        checks = [
            tf.debugging.assert_equal(tf.shape(mask)[:3], tf.shape(image)[:3], message="mask and image sizes differ"),
            tf.debugging.assert_all_finite(image, "the image holds NaN or infinite values"),
            tf.debugging.assert_less_equal(
                tf.reduce_prod(tf.shape(image, out_type=tf.int64)[:3]),
                tf.constant(self.max_network_pixels, tf.int64),
                message=f"the batch is larger than {self.max_network_pixels} pixels in all (images x height x width), the most the network runs on at once",
            ),
        ]
        with tf.control_dependencies(checks):  # nothing runs on inputs that failed a check
            image, mask = tf.identity(image), tf.cast(mask > 0.5, tf.float32)
        # An empty batch, or images of no pixels, is answered as it came: there is nothing to complete.
        return tf.cond(tf.equal(tf.size(image), 0), lambda: image, lambda: self.complete_checked(image, mask))

    def complete_checked(self, image, mask):
        """The completion of inputs that passed __call__'s checks (the mask 0 or 1, a batch of
        pixels): what a runtime without TensorFlow's checking ops runs (export_lib.export_litert),
        its caller checking in their place."""
        height, width = tf.shape(image)[1], tf.shape(image)[2]
        # Pad by repeating the last row and column (works for any size, 1x1 included).
        rows = tf.minimum(tf.range(height + (-height) % models.SIZE_MULTIPLE), height - 1)
        cols = tf.minimum(tf.range(width + (-width) % models.SIZE_MULTIPLE), width - 1)
        padded_image = tf.gather(tf.gather(image, rows, axis=1), cols, axis=2)
        padded_mask = tf.gather(tf.gather(mask, rows, axis=1), cols, axis=2)
        completed = self.network(models.completion_input(padded_image, padded_mask, self.mean_pixel), training=False)
        return models.composite(completed[:, :height, :width, :], image, mask)
