"""The machine's own yardstick, printed beside every benchmark figure: these 2-core machines
differ a lot (one measured a 300 GFLOP/s float32 matmul, another 68), so figures compare only
within one run on one machine."""

import time


def best_time(function, repeats: int) -> float:
    """The best of `repeats` timed calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def roofline_gflops(n: int = 4096) -> float:
    """The best float32 GFLOP/s of an n x n tf.matmul."""
    import tensorflow as tf  # noqa: PLC0415

    a = tf.random.uniform((n, n))
    matmul = tf.function(lambda x: tf.matmul(x, x))
    seconds = best_time(lambda: matmul(a).numpy(), repeats=5)
    return 2 * n**3 / seconds / 1e9
