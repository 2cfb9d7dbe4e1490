"""Mirrored strategy on two logical CPU devices gives the single-device loss.

Logical devices must be configured before TensorFlow starts, so the check
runs in a fresh interpreter.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from detect.models import build_retinanet
    from tests.models.conftest import tiny_config, square_scenes

    images, targets = square_scenes(4, size=64, seed=5)
    def batch():
        return tf.data.Dataset.from_tensors((images, targets))

    def run(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_retinanet(tiny_config(freeze_batchnorm=True))
            model.compile(optimizer=keras.optimizers.SGD(0.01))
        data = batch()
        loss = model.evaluate(data, verbose=0, return_dict=True)
        model.fit(data, epochs=1, verbose=0)
        return loss, model.get_weights()

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    one, w1 = run(tf.distribute.get_strategy())
    two, w2 = run(mirrored)
    print(json.dumps({"single": one, "mirrored": two,
                      "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2))}))
""")


def test_mirrored_loss_equals_single_device_loss():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    r = json.loads(out.stdout.strip().splitlines()[-1])
    for k in ("loss", "cls_loss", "box_loss"):
        assert abs(r["single"][k] - r["mirrored"][k]) <= 1e-5 * max(1.0, abs(r["single"][k])), r
    assert r["max_weight_diff"] < 1e-5, r  # one training step lands on the same weights
