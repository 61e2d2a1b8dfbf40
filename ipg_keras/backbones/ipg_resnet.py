"""ResNet-18/34/50/101 with image pyramid guidance injected after every stage.

Layer names follow keras.applications' ResNet (`conv1_conv`,
`conv2_block1_1_conv`, ...), so its ImageNet weights map onto ours by name.
"""

from __future__ import annotations

import os
from typing import Sequence

import keras
from keras import layers

from ipg_keras.layers import BatchNormalization, IPGFusion, IPGTransform, ImageNormalization, ImagePyramid
from ipg_keras.layers.batch_normalization import defer_bias
from ipg_keras.layers.convolution import Conv2D
from ipg_keras.layers.ipg_transform import BN_EPSILON

# depth -> (block kind, blocks per stage conv2..conv5)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
STAGE_FILTERS = (64, 128, 256, 512)
IMAGENET_DEPTHS = {50: "ResNet50", 101: "ResNet101"}


def _bn(name):
    return BatchNormalization(epsilon=BN_EPSILON, name=name)


def _bottleneck(x, filters, stride, name, shortcut_conv):
    # keras.applications' v1 block: stride on the first 1x1 conv, convs with bias.
    shortcut = x
    if shortcut_conv:
        shortcut = Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = _bn(f"{name}_0_bn", )(shortcut)
    x = Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(f"{name}_1_bn", )(x))
    x = Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_bn(f"{name}_2_bn", )(x))
    x = Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = _bn(f"{name}_3_bn", )(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _basic(x, filters, stride, name, shortcut_conv):
    shortcut = x
    if shortcut_conv:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    # Explicit padding keeps stride-2 convs symmetric (like keras.applications' stem).
    if stride > 1:
        x = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
        x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_1_conv")(x)
    else:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_1_conv")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(f"{name}_1_bn")(x))
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x)
    x = _bn(f"{name}_2_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


@keras.saving.register_keras_serializable(package="ipg_keras")
class IPGResNet(keras.Model):
    """A ResNet backbone guided by an image pyramid (IPG-Net), or the plain one.

    With `ipg=True`, after each guided stage `l` the stage output `C_l` is
    fused with `IPGTransform(ImagePyramid(x)_l)` by `IPGFusion`; the fused
    features are both `C_l` for the FPN and the input of stage `l + 1`. With
    `ipg=False` the identical network is built without pyramid, transforms or
    fusions: the like-for-like baseline.

    Args:
        depth: 18, 34, 50 or 101.
        ipg: inject image pyramid guidance.
        weights: `None` (random), `"imagenet"` (keras.applications weights,
            50 and 101 only; downloads once) or the path of a weights file
            saved from the matching keras.applications model
            (`ResNet50(include_top=False).save_weights(path)`).
        ipg_levels: stages to guide (2..5 = C2..C5).
        ipg_width, ipg_depth: width and residual blocks of each IPGTransform.
        ipg_out_ratio: guidance channels = stage width * this ratio.
        fusion: IPGFusion mode, `"concat"`, `"sum"` or `"gated"`.
        fusion_init: IPGFusion init, `"zero"` (BN gamma 0: starts as the plain
            ResNet) or `"one"` (concat/sum only).
        pyramid_method: `"area"` or `"bilinear"`.
        width_multiplier: scales every stage's width (CPU-sized networks);
            must be 1.0 to load ImageNet weights.
        normalization: `"torch"`, `"caffe"` or `None` for automatic (`"caffe"`
            when ImageNet weights are loaded, else `"torch"`).

    Shape:
        input: `[B, H, W, 3]` RGB in 0..255, H and W divisible by 32.
        output: dict `{"C2": [B, H/4, W/4, c2], ..., "C5": [B, H/32, W/32, c5]}`.
    """

    def __init__(
        self,
        depth: int = 50,
        ipg: bool = True,
        weights: str | None = None,
        ipg_levels: Sequence[int] = (2, 3, 4, 5),
        ipg_width: int = 64,
        ipg_depth: int = 1,
        ipg_out_ratio: float = 0.25,
        fusion: str = "concat",
        pyramid_method: str = "area",
        width_multiplier: float = 1.0,
        normalization: str | None = None,
        fusion_init: str = "zero",
        **kwargs,
    ):
        if depth not in RESNET_SPECS:
            raise ValueError(f"Unknown ResNet depth {depth!r}; choose one of {sorted(RESNET_SPECS)}.")
        ipg_levels = [int(l) for l in ipg_levels]
        if any(l not in (2, 3, 4, 5) for l in ipg_levels):
            raise ValueError(f"ipg_levels must be within 2..5 (C2..C5), got {ipg_levels}.")
        if weights is not None:
            if width_multiplier != 1.0:
                raise ValueError("Pretrained weights need width_multiplier=1.0.")
            if depth not in IMAGENET_DEPTHS:
                raise ValueError(
                    f"No ImageNet weights for ResNet-{depth} in keras.applications; "
                    f"use depth 50 or 101, or weights=None."
                )
            if weights != "imagenet" and not os.path.exists(weights):
                raise FileNotFoundError(
                    f"Backbone weights file {weights!r} does not exist; pass 'imagenet', None, or the path "
                    f"of keras.applications.{IMAGENET_DEPTHS[depth]}(include_top=False).save_weights(...)."
                )
        if normalization is None:
            normalization = "caffe" if weights is not None else "torch"

        kind, blocks = RESNET_SPECS[depth]
        block_fn = _bottleneck if kind == "bottleneck" else _basic
        expansion = 4 if kind == "bottleneck" else 1
        filters = [max(8, int(round(f * width_multiplier))) for f in STAGE_FILTERS]
        stem_filters = max(8, int(round(64 * width_multiplier)))

        inputs = keras.Input(shape=(None, None, 3), name="images")
        x = ImageNormalization(normalization, name="normalization")(inputs)
        pyramid = {}
        if ipg and ipg_levels:
            levels = sorted(ipg_levels)
            images = ImagePyramid(levels, method=pyramid_method, name="ipg_pyramid")(x)
            pyramid = dict(zip(levels, images))

        x_img = x
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x_img)
        x = Conv2D(stem_filters, 7, strides=2, use_bias=kind == "bottleneck", name="conv1_conv")(x)
        x = layers.Activation("relu", name="conv1_relu")(_bn("conv1_bn")(x))
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

        outputs = {}
        for stage, (n_blocks, f) in enumerate(zip(blocks, filters)):
            level = stage + 2
            for b in range(n_blocks):
                stride = 2 if (b == 0 and level > 2) else 1
                shortcut_conv = b == 0 and (stride != 1 or kind == "bottleneck" or x.shape[-1] != f * expansion)
                x = block_fn(x, f, stride, f"conv{level}_block{b + 1}", shortcut_conv)
            if level in pyramid:
                guidance = IPGTransform(
                    max(1, int(round(f * expansion * ipg_out_ratio))),
                    width=ipg_width,
                    depth=ipg_depth,
                    name=f"ipg_transform_c{level}",
                )(pyramid[level])
                x = IPGFusion(fusion, init=fusion_init, name=f"ipg_fusion_c{level}")([x, guidance])
            outputs[f"C{level}"] = x

        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.depth = depth
        self.ipg = bool(ipg)
        self.ipg_levels = ipg_levels
        self.ipg_width = ipg_width
        self.ipg_depth = ipg_depth
        self.ipg_out_ratio = ipg_out_ratio
        self.fusion = fusion
        self.fusion_init = fusion_init
        self.pyramid_method = pyramid_method
        self.width_multiplier = width_multiplier
        self.normalization = normalization
        self.stage_channels = {f"C{s + 2}": f * expansion for s, f in enumerate(filters)}
        if weights is not None:
            load_imagenet_weights(self, weights)
        self.freeze_redundant_biases()
        self.defer_biases()

    def conv_bn_pairs(self) -> list[tuple[layers.Conv2D, layers.BatchNormalization]]:
        """The ResNet convolutions with a bias (bottleneck ResNets) and the BatchNormalization right after each.

        Pairs follow the keras.applications names (`X_conv` -> `X_bn`).
        """
        pairs = []
        for layer in self.layers:
            if isinstance(layer, layers.Conv2D) and layer.use_bias and layer.name.endswith("_conv"):
                try:
                    bn = self.get_layer(layer.name[: -len("_conv")] + "_bn")
                except ValueError:
                    continue
                if isinstance(bn, layers.BatchNormalization):
                    pairs.append((layer, bn))
        return pairs

    def freeze_redundant_biases(self) -> int:
        """Makes a conv bias trainable only where the BatchNormalization after it does not cancel it.

        keras.applications' ResNet-50/101 (whose ImageNet weights this backbone
        loads) give every conv a bias, each followed by BatchNormalization. A
        BN layer that trains normalises with the batch mean, which subtracts
        the bias again: its gradient is exactly zero, so computing it only
        costs time (the bias-gradient reduction made a training step of
        ResNet-50 at 512x512 about 25 % slower per bottleneck block at C2, see
        benchmarks/RESULTS.md "Training step profile"). Such biases are made
        non-trainable; their values (zeros, or the ImageNet ones) still apply
        in inference, exactly as before. Where the BN is frozen
        (`layer.trainable = False`, `model.batchnorm: frozen`) the bias is a
        real parameter and stays trainable: call this again after changing a
        BN layer's `trainable`. Weights and saved models are unchanged (the
        variables exist as before). Returns the number of frozen biases.
        """
        frozen = 0
        for conv, bn in self.conv_bn_pairs():
            conv.bias.trainable = not (bn.trainable and conv.trainable)
            frozen += not conv.bias.trainable
        return frozen

    def defer_biases(self, deferred: bool = True) -> int:
        """Hands each conv bias to the BatchNormalization after it (`defer_bias`), or takes it back.

        The pair computes the same function (up to float rounding), and in
        inference conv + BN + ReLU become one fused op on CPU instead of a
        conv with bias and three elementwise passes (benchmarks/RESULTS.md,
        "Conv biases folded into BatchNormalization"). Done at construction;
        returns the number of pairs.
        """
        pairs = [(conv, bn) for conv, bn in self.conv_bn_pairs()
                 if isinstance(conv, Conv2D) and isinstance(bn, BatchNormalization)]
        for conv, bn in pairs:
            defer_bias(conv, bn, deferred)
        return len(pairs)

    def get_config(self):
        # Weights travel with the saved model, so a reloaded model never downloads again.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "depth": self.depth,
            "ipg": self.ipg,
            "weights": None,
            "ipg_levels": list(self.ipg_levels),
            "ipg_width": self.ipg_width,
            "ipg_depth": self.ipg_depth,
            "ipg_out_ratio": self.ipg_out_ratio,
            "fusion": self.fusion,
            "fusion_init": self.fusion_init,
            "pyramid_method": self.pyramid_method,
            "width_multiplier": self.width_multiplier,
            "normalization": self.normalization,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def load_imagenet_weights(backbone: IPGResNet, weights: str) -> int:
    """Copies keras.applications ResNet weights into `backbone` by layer name.

    `weights` is `"imagenet"` (downloaded by keras.applications) or a file
    saved from `keras.applications.ResNet50/101(include_top=False)`. IPG
    layers keep their initialisation; with zero-gamma fusions the guided
    network starts out computing the pretrained ResNet exactly.

    Returns the number of layers whose weights were copied.
    """
    app_cls = getattr(keras.applications, IMAGENET_DEPTHS[backbone.depth])
    if weights == "imagenet":
        reference = app_cls(include_top=False, weights="imagenet", input_shape=(None, None, 3))
    else:
        reference = app_cls(include_top=False, weights=None, input_shape=(None, None, 3))
        try:
            reference.load_weights(weights)
        except Exception as error:  # noqa: BLE001 - re-raised with the fix
            raise ValueError(
                f"Could not load backbone weights from {weights!r}: {error}. The file must come from "
                f"keras.applications.{app_cls.__name__}(include_top=False).save_weights(path)."
            ) from error
    copied = 0
    for ref_layer in reference.layers:
        ref_weights = ref_layer.get_weights()
        if not ref_weights:
            continue
        try:
            layer = backbone.get_layer(ref_layer.name)
        except ValueError as error:
            raise ValueError(f"Backbone has no layer {ref_layer.name!r} to take ImageNet weights.") from error
        layer.set_weights(ref_weights)
        copied += 1
    return copied
