"""Training-step factory for `benchmarks/data_pipeline.py --train-step benchmarks.main_job_step:make_step`.

Builds the main job's IPG-RetinaNet (training/configs/synthetic_retinanet_cpu.yaml,
one class for the trees data) and returns one optimizer step on a given batch,
so the pipeline's images/s can be read next to the model's.
"""

from __future__ import annotations

import keras


def make_step(image_size: int, batch_size: int):
    from ipg_keras.training.config import load_config
    from ipg_keras.training.train import build_model

    cfg = load_config("synthetic_retinanet_cpu")
    model = build_model(cfg, num_classes=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))

    def step(images, targets):
        model.train_on_batch(images, targets)

    return step
