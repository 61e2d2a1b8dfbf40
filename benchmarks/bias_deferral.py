"""Conv biases handed to the BatchNormalization after them: forward speed-up, interleaved A/B.

The same IPG-RetinaNet-R50 (and `ipg=False`) at 512x512, same weights, traced
twice: with the backbone's conv biases applied by the conv (`defer_biases(False)`,
the layout before: conv + bias as one op, then BN's multiply and add and the
ReLU as separate passes) and handed to the BN (`defer_biases(True)`, the
default: conv + BN + ReLU folded into one oneDNN op). Calls alternate between
the two, medians are compared, and the outputs of both are compared too.

    python benchmarks/bias_deferral.py                       # R50 at 512, batch 1 and 8
    python benchmarks/bias_deferral.py --preset tiny         # seconds: smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import block, machine_info, quiet_tf, write_json  # noqa: E402


def measure(ipg: bool, batch: int, size: int, rounds: int, tiny: bool) -> dict:
    import numpy as np
    import tensorflow as tf

    from ipg_keras.models.retinanet import IPGRetinaNet

    kwargs = dict(backbone_kwargs=dict(width_multiplier=0.125, ipg_width=4), fpn_channels=8, head_width=8,
                  head_depth=1) if tiny else {}
    model = IPGRetinaNet(5, backbone="resnet50", ipg=ipg, **kwargs)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    model(x[:1], training=False)
    for conv, bn in model.backbone.conv_bn_pairs():  # non-zero biases and statistics, so the comparison means something
        conv.bias.assign(rng.normal(0, 0.1, conv.bias.shape).astype("float32"))
        bn.moving_mean.assign(rng.normal(0, 0.1, bn.moving_mean.shape).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape).astype("float32"))
    fns = {}
    for deferred in (False, True):
        model.backbone.defer_biases(deferred)  # read when the function is traced
        fns[deferred] = tf.function(lambda t: model(t, training=False))
        block(fns[deferred](x))
    diff = max(float(tf.reduce_max(tf.abs(a - b)))
               for a, b in zip(tf.nest.flatten(fns[False](x)), tf.nest.flatten(fns[True](x))))
    times = {False: [], True: []}
    for r in range(rounds):
        for deferred in ((False, True) if r % 2 else (True, False)):
            start = time.perf_counter()
            block(fns[deferred](x))
            times[deferred].append(time.perf_counter() - start)
    before, after = statistics.median(times[False]), statistics.median(times[True])
    return {"ipg": ipg, "batch": batch, "bias_in_conv_s": before, "bias_deferred_s": after,
            "speed_up": before / after, "max_abs_output_diff": diff}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("full", "tiny"), default="full")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per arm (default 9 at batch 1, 5 else)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    quiet_tf()
    tiny = args.preset == "tiny"
    size = 128 if tiny else 512
    info = machine_info()
    rows = []
    for ipg in (True, False):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            rounds = args.rounds or (9 if batch == 1 else 5)
            row = measure(ipg, batch, size, rounds, tiny)
            rows.append(row)
            print(f"ipg={ipg} batch {batch}: bias in conv {row['bias_in_conv_s']:.3f} s, deferred to BN "
                  f"{row['bias_deferred_s']:.3f} s: {row['speed_up']:.3f}x (outputs differ by "
                  f"{row['max_abs_output_diff']:.1e})", flush=True)
    output = args.output or str(Path(__file__).resolve().parent / "results" / f"bias_deferral_{args.preset}.json")
    write_json(output, {"machine": info, "preset": args.preset, "image_size": size, "rows": rows})
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
