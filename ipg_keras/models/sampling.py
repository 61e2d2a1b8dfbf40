"""Balanced random sampling of positives and negatives (RPN anchors, RoIs), in graph mode.

Everything works on `[B, N]` masks with static-size `top_k` calls, so the
sampling runs inside `fit`'s compiled train step for any batch size without
python loops over images.
"""

from __future__ import annotations

import tensorflow as tf


def random_subset(mask, count, max_count: int):
    """Chooses `count[b]` entries uniformly at random among the True entries of `mask[b]`.

    Args:
        mask: `[B, N]` bool candidates.
        count: `[B]` int, how many to keep per row; at most `max_count` and at
            most the number of candidates in the row.
        max_count: static upper bound of `count`.
    Returns:
        `[B, N]` bool with exactly `count[b]` True entries per row, a subset of `mask`.
    """
    mask = tf.convert_to_tensor(mask, tf.bool)
    shape = tf.shape(mask)
    k = tf.minimum(int(max_count), shape[1])
    # Random keys for candidates, -1 for the rest: the top `count` keys are a
    # uniform random subset of the candidates.
    keys = tf.where(mask, tf.random.uniform(shape), -1.0)
    _, index = tf.math.top_k(keys, k=k)  # [B, k], distinct per row
    take = tf.range(k)[None, :] < tf.cast(count, tf.int32)[:, None]
    rows = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(index))
    chosen = tf.scatter_nd(tf.stack([rows, index], axis=-1), tf.cast(take, tf.int32), shape)
    return chosen > 0


def sample_balanced(positive, negative, num_samples: int, positive_fraction: float):
    """Samples up to `num_samples` entries per row, at most `positive_fraction` of them positive.

    As torchvision's `BalancedPositiveNegativeSampler`: take
    `min(#positives, int(num_samples * positive_fraction))` positives, then
    fill up with negatives (`min(#negatives, num_samples - positives taken)`).

    Args:
        positive, negative: `[B, N]` disjoint bool masks.
    Returns:
        `(sampled_positive, sampled_negative)`, `[B, N]` bool each.
    """
    positive = tf.convert_to_tensor(positive, tf.bool)
    negative = tf.convert_to_tensor(negative, tf.bool)
    max_positive = int(num_samples * positive_fraction)
    num_positive = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positive)
    num_negative = tf.minimum(tf.reduce_sum(tf.cast(negative, tf.int32), axis=1), num_samples - num_positive)
    return (
        random_subset(positive, num_positive, max_positive),
        random_subset(negative, num_negative, num_samples),
    )


def gather_sampled(sampled_positive, sampled_negative, num_samples: int):
    """Indices of the sampled entries, positives first, in a fixed-size `[B, K]` tensor.

    `K = min(num_samples, N)`. Rows with fewer samples than `K` are padded
    with unsampled indices, marked False in `valid`.

    Returns:
        `(indices [B, K] int32, valid [B, K] bool)`.
    """
    priority = 2 * tf.cast(sampled_positive, tf.int32) + tf.cast(sampled_negative, tf.int32)
    k = tf.minimum(int(num_samples), tf.shape(priority)[1])
    values, indices = tf.math.top_k(priority, k=k)
    return indices, values > 0
