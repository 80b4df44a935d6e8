"""Which devices train: the tf.distribute strategy behind FineTuneConfig.distribute.

`auto` takes the first GPU TensorFlow sees, else the CPU; `mirrored` splits every
batch over all local GPUs (over the logical CPUs when there is no GPU, which is how
it is tested); `multi_worker` runs one replica set per machine, from TF_CONFIG.
"""

from __future__ import annotations

import json
import os

from retrain.errors import UserError

DISTRIBUTE = ("auto", "mirrored", "multi_worker")


def make_strategy(name: str):
    import tensorflow as tf

    if name not in DISTRIBUTE:
        raise UserError(f"FineTuneConfig.distribute must be one of {', '.join(DISTRIBUTE)}, got {name!r}")
    if name == "multi_worker":
        try:
            cluster = json.loads(os.environ.get("TF_CONFIG") or "null")
        except json.JSONDecodeError as e:
            raise UserError(f"FineTuneConfig.distribute multi_worker: TF_CONFIG is not JSON ({e})") from None
        if not isinstance(cluster, dict) or "cluster" not in cluster or "task" not in cluster:
            raise UserError("FineTuneConfig.distribute multi_worker needs TF_CONFIG with 'cluster' and 'task' (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "mirrored":
        devices = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0])
    return tf.distribute.get_strategy()


def describe(strategy) -> str:
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return f"{replicas} replicas on {strategy.cluster_resolver.cluster_spec().num_tasks('worker')} machines"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return f"{replicas} replicas ({', '.join(strategy.extended.worker_devices)})"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return f"one device ({strategy.extended.worker_devices[0]})"
    return "the CPU"

