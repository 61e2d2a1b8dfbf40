"""The IPG fusion module: backbone features + image pyramid guidance."""

from __future__ import annotations

import keras
from keras import layers, ops

from ipg_keras.layers.batch_normalization import BatchNormalization
from ipg_keras.layers.ipg_transform import BN_EPSILON

FUSION_MODES = ("concat", "sum", "gated")
FUSION_INITS = ("zero", "one")


@keras.saving.register_keras_serializable(package="ipg_keras")
class IPGFusion(keras.layers.Layer):
    """Fuses a backbone stage's features `F` with its guidance features `G`.

    Modes (`C` = channels of `F`):
      - `"concat"` (default): `F + BN(conv1x1(concat(F, G)) -> C)`
      - `"sum"`: `F + BN(conv1x1(G) -> C)`
      - `"gated"`: `F * (1 + sigmoid(conv1x1(G) -> C))`

    In `concat` and `sum` the BN's gamma starts at zero (`init="zero"`, the
    default), so at initialisation the fused backbone computes exactly what the
    plain one does and ImageNet-pretrained weights are intact when training
    starts. `init="one"` starts gamma at one instead (the guidance is heard from
    the first step; an ablation of the IPG study, since from scratch a zero start
    may keep IPG silent for much of a short run). `gated` has no BN and takes
    only `init="zero"` (its conv starts He-normal, as always).

    Shape:
        inputs: `[F, G]` with `F` `[B, h, w, C]` and `G` `[B, h, w, C_g]`.
        output: `[B, h, w, C]`.
    """

    def __init__(self, mode: str = "concat", init: str = "zero", **kwargs):
        super().__init__(**kwargs)
        if mode not in FUSION_MODES:
            raise ValueError(f"IPGFusion mode must be one of {FUSION_MODES}, got {mode!r}.")
        if init not in FUSION_INITS:
            raise ValueError(f"IPGFusion init must be one of {FUSION_INITS}, got {init!r}.")
        if mode == "gated" and init != "zero":
            raise ValueError("IPGFusion init='one' sets the BN gamma of the concat/sum modes; the gated mode has no "
                             "BN: use init='zero' (its default) with mode='gated'.")
        self.mode = mode
        self.init = init
        self.conv = None
        self.bn = None

    def build(self, input_shape):
        f_shape, g_shape = (tuple(s) for s in input_shape)
        channels = f_shape[-1]
        if channels is None:
            raise ValueError("IPGFusion needs a known channel count for the backbone features F.")
        self.conv = layers.Conv2D(
            channels, 1, use_bias=self.mode == "gated", kernel_initializer="he_normal", name="conv"
        )
        if self.mode == "concat":
            self.conv.build(f_shape[:-1] + (channels + g_shape[-1],))
        else:
            self.conv.build(g_shape)
        if self.mode != "gated":
            self.bn = BatchNormalization(
                epsilon=BN_EPSILON, gamma_initializer="zeros" if self.init == "zero" else "ones", name="bn"
            )
            self.bn.build(f_shape)

    def call(self, inputs, training=None):
        features, guidance = inputs
        guidance = ops.cast(guidance, features.dtype)
        if self.mode == "gated":
            return features * (1.0 + ops.sigmoid(self.conv(guidance)))
        x = ops.concatenate([features, guidance], axis=-1) if self.mode == "concat" else guidance
        return features + self.bn(self.conv(x), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "init": self.init}
