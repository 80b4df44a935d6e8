"""Fine-tuning (--recipe finetune, --fine_tune_layers): the batches it trains on, what it
changes, checkpoints and resuming after kill -9, the mirrored strategy, exports, and
flag mistakes; an image unreadable after its bottleneck was made leaves every array of its set
(features, labels, patient rows), with a warning naming it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from retrain.cli import retrain
from retrain.data.augmentation import EpochAugmentation
from retrain.data.batches import TrainingImages, epoch_order
from retrain.data.dataset import set_for_file
from retrain.data.images import load_image
from retrain.train.top_layer import TopLayer, TrainingConfig
from tests.conftest import run_cli

BIN = Path(sys.executable).parent
FULL_AUGMENTATION = EpochAugmentation(crop_area=0.5, crop_aspect=4 / 3, flip_left_right=True, flip_up_down=True,
                                      rotate90=True, random_brightness=15, random_contrast=20, random_saturation=20,
                                      random_hue=3)


def _images(make_tree, counts=None):
    tree = make_tree(counts or {"red": 5, "blue": 5})
    paths = sorted(tree.rglob("*.jpg"))
    labels = np.array([0 if "blue" in p.name else 1 for p in paths], np.int64)
    return paths, labels


def test_without_augmentation_the_batches_hold_exactly_what_load_image_gives(make_tree):
    paths, labels = _images(make_tree)
    images = TrainingImages(paths, labels, 224, EpochAugmentation(), seed=3, batch_size=4)
    seen = 0
    for batch in images.epoch(1):
        for row, index in enumerate(batch.indices):
            np.testing.assert_array_equal(batch.pixels[row], load_image(paths[index], 224).astype(np.float32))
            assert batch.labels[row] == labels[index]
        seen += len(batch.indices)
    assert seen == 8  # two full batches of 4; the last partial batch is dropped


def test_each_epoch_is_a_new_order_and_new_versions_the_same_on_every_run(make_tree):
    paths, labels = _images(make_tree)
    images = TrainingImages(paths, labels, 64, FULL_AUGMENTATION, seed=3, batch_size=5)
    first, again, second = (list(images.epoch(e)) for e in (1, 1, 2))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.pixels, b.pixels)
    assert not all(np.array_equal(a.indices, b.indices) for a, b in zip(first, second))
    plain = load_image(paths[first[0].indices[0]], 64).astype(np.float32)
    assert not np.array_equal(first[0].pixels[0], plain)
    assert sorted(np.concatenate([b.indices for b in first]).tolist()) == list(range(10))


def test_epoch_order_covers_every_image_once_in_full_batches():
    batches = epoch_order(10, 3, seed=0, epoch=4)
    assert [len(b) for b in batches] == [3, 3, 3]
    assert len(set(np.concatenate(batches).tolist())) == 9
    assert [len(b) for b in epoch_order(2, 8, seed=0, epoch=1)] == [2]


def test_colour_changes_stay_in_range_and_keep_grey_grey(tmp_path):
    from retrain.data.images import AugmentationDraw

    grey = np.full((8, 8, 3), 100, np.uint8)
    draw = AugmentationDraw(zoom=1.0, crop_x=0, crop_y=0, flip_left_right=False, flip_up_down=False, quarter_turns=0,
                          brightness=1.1, contrast=1.2, saturation=0.8, hue=0.03)
    out = draw.apply_to_pixels(grey).astype(int)
    assert np.abs(out - 110).max() <= 1  # hue and saturation leave grey alone; brightness scales it
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 250
    turned = AugmentationDraw(**{**draw.__dict__, "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.25})
    out = turned.apply_to_pixels(colour)
    assert out.dtype == np.uint8 and not np.array_equal(out, colour)


def test_an_image_that_cannot_be_read_mid_epoch_is_named_once_and_left_out(make_tree):
    paths, labels = _images(make_tree)
    paths[2].write_bytes(b"not a jpeg")
    named = []
    images = TrainingImages(paths, labels, 32, FULL_AUGMENTATION, seed=1, batch_size=3)
    for epoch in (1, 2, 3):
        for batch in images.epoch(epoch, on_unreadable=named.append):
            assert 2 not in batch.indices
    assert [e.path for e in named] == [paths[2]]


def _tune(tmp_path, backbone, paths, labels, layers, distribute="auto", epochs=1, steps=None, dropout=0.0, build=None, **kw):
    from retrain.reporter import Reporter
    from retrain.train.fine_tuning import (
        FineTuneConfig,
        RunFolder,
        TuningData,
        fine_tune,
    )

    head = _starting_head(backbone)
    config = FineTuneConfig(layers=layers, epochs=epochs, steps=steps, learning_rate=1e-3, batch_size=4,
                            distribute=distribute, **kw)
    pairs = list(zip(paths, labels.tolist()))
    lines = []
    tuned, result = fine_tune(backbone, build or (lambda: _clone(backbone)), head,
                              TuningData(pairs, pairs[:4], 2, backbone.input_size), config,
                              TrainingConfig(random_seed=0, dropout=dropout), RunFolder(tmp_path / "run", "fp"),
                              Reporter(log=lines.append, warn=lines.append))
    return tuned, result, lines


def _starting_head(backbone) -> TopLayer:
    """The top layer every _tune starts from (as float32 as the trained one)."""
    return TopLayer(np.random.default_rng(3).normal(0, 0.05, (backbone.feature_size, 2)).astype(np.float32),
                    np.zeros(2, np.float32))


def _clone(backbone):
    from retrain.backbones import create_backbone

    return create_backbone(backbone.config.name, Path("/nonexistent"), random_weights=True)


@pytest.fixture
def random_lite0(tmp_path):
    from retrain.backbones import create_backbone

    return create_backbone("efficientnet_lite0", tmp_path, random_weights=True)


@pytest.mark.slow
@pytest.mark.parametrize("layers, tuned_prefixes", [(1, ("head_",)), (3, ("head_", "block15_", "block14_")),
                                                    ("all", ("head_", "block", "stem_"))])
def test_fine_tuning_changes_only_the_unfrozen_layers(random_lite0, make_tree, tmp_path, layers, tuned_prefixes):
    paths, labels = _images(make_tree)
    before = {name: variable.numpy().copy() for name, variable in random_lite0.module.layers.items()}
    tuned, result, _ = _tune(tmp_path, random_lite0, paths, labels, layers)
    for name, variable in tuned.module.layers.items():
        if name.startswith(tuned_prefixes) and name.endswith("kernel"):
            assert not np.array_equal(variable.numpy(), before[name]), f"{name} was not tuned"
        elif not name.startswith(tuned_prefixes):
            np.testing.assert_array_equal(variable.numpy(), before[name], err_msg=f"{name} is frozen but changed")
    start = _starting_head(random_lite0)
    assert result.top_layer.weights.dtype == start.weights.dtype == np.float32
    # two AdamW steps at 1e-3 move a weight by up to ~2e-3: the top layer is always tuned with the unfrozen layers
    assert np.abs(result.top_layer.weights - start.weights).max() > 1e-4, "the top layer's weights were not tuned"
    assert np.abs(result.top_layer.bias - start.bias).max() > 1e-4, "the top layer's bias was not tuned"


@pytest.mark.slow
def test_a_keras_backbone_tunes_its_last_layers_and_keeps_batch_norm_frozen(make_tree, tmp_path):
    from retrain.backbones import create_backbone

    backbone = create_backbone("mobilenet_0.25_128", tmp_path, random_weights=True)
    paths, labels = _images(make_tree)
    before = {w.path: w.numpy().copy() for w in backbone.module.model.weights}
    tuned, _, _ = _tune(tmp_path, backbone, paths, labels, 2)
    changed = {w.path for w in tuned.module.model.weights if not np.array_equal(w.numpy(), before[w.path])}
    layers_with_changes = {path.rsplit("/", 1)[0] for path in changed}
    assert len(layers_with_changes) == 2, changed
    assert not any("bn" in path or "batch_norm" in path for path in changed), changed


def _save_reusable_module(path: Path, trainable: bool) -> Path:
    """A TF Hub style module (the Reusable SavedModel API): it lists its trainable variables."""
    import tensorflow as tf

    module = tf.train.Checkpoint()
    module.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 5], seed=[1, 2]))
    module.trainable_variables = [module.kernel] if trainable else []
    module.variables = [module.kernel]

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    def call(images):
        conv = tf.nn.relu(tf.nn.conv2d(images, module.kernel, 2, "SAME"))
        return tf.concat([tf.reduce_mean(images, [1, 2]), tf.reduce_mean(conv, [1, 2])], axis=1)

    module.__call__ = call
    tf.saved_model.save(module, str(path))
    return path


@pytest.mark.slow
def test_a_tf_hub_module_is_tuned_whole_and_one_without_trainable_weights_is_refused(make_tree, tmp_path):
    from retrain.backbones import create_hub_backbone
    from retrain.errors import UserError

    module = _save_reusable_module(tmp_path / "hub", trainable=True)
    backbone = create_hub_backbone(str(module))
    paths, labels = _images(make_tree)
    kernel = backbone.module.loaded.kernel.numpy().copy()
    tuned, _, _ = _tune(tmp_path, backbone, paths, labels, "all", build=lambda: create_hub_backbone(str(module)))
    assert not np.array_equal(tuned.module.loaded.kernel.numpy(), kernel)

    frozen = _save_reusable_module(tmp_path / "frozen", trainable=False)
    with pytest.raises(UserError, match="no trainable variables, so it cannot be fine-tuned"):
        create_hub_backbone(str(frozen)).module.unfreeze("all")


@pytest.mark.slow
def test_exports_carry_the_tuned_weights_and_a_new_identity(random_lite0, make_tree, tmp_path):
    from retrain.export.graph import (
        ServingModel,
        export_frozen_graph,
        export_saved_model,
        model_card,
    )
    from retrain.predict.prediction import load_model
    from retrain.train.fine_tuning import copy_tuned_weights

    paths, labels = _images(make_tree)
    pixels = np.stack([load_image(p, 224) for p in paths[:3]]).astype(np.float32)
    untuned_identity = random_lite0.identity
    tuned, result, _ = _tune(tmp_path, random_lite0, paths, labels, 2)
    before = ServingModel(random_lite0, result.top_layer, "final_result").serve(pixels)["final_result"].numpy()
    copy_tuned_weights(tuned, random_lite0, 2)
    assert random_lite0.identity.startswith(untuned_identity + "-ft2-")
    classifier = ServingModel(random_lite0, result.top_layer, "final_result")
    in_memory = classifier.serve(pixels)["final_result"].numpy()
    assert np.abs(in_memory - before).max() > 1e-4
    metadata = model_card(random_lite0, ["a", "b"], "final_result")
    export_frozen_graph(classifier, metadata, tmp_path / "g.pb")
    export_saved_model(classifier, metadata, tmp_path / "saved")
    for exported in ("g.pb", "saved"):
        np.testing.assert_allclose(load_model(tmp_path / exported).predict(pixels), in_memory, atol=1e-5, err_msg=exported)


def test_a_damaged_checkpoint_is_reported_in_one_line_and_training_starts_afresh(random_lite0, make_tree, tmp_path):
    paths, labels = _images(make_tree)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    _, result, lines = _tune(tmp_path, random_lite0, paths, labels, 1)
    damaged = [line for line in lines if "damaged" in line]
    assert len(damaged) == 1 and "starts afresh" in damaged[0]
    assert result.resumed_from == 0 and len(result.history) == 1
    from retrain.train.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path / "run").epoch == 1  # replaced by a sound one


@pytest.mark.slow
def test_a_finished_run_resumes_to_the_same_weights_without_training_again(random_lite0, make_tree, tmp_path):
    paths, labels = _images(make_tree)
    first, one, _ = _tune(tmp_path, random_lite0, paths, labels, 1, epochs=2)
    second, two, lines = _tune(tmp_path, random_lite0, paths, labels, 1, epochs=2)
    assert any("already done" in line for line in lines)
    np.testing.assert_array_equal(one.top_layer.weights, two.top_layer.weights)
    np.testing.assert_array_equal(first.module.layers["head_kernel"].numpy(), second.module.layers["head_kernel"].numpy())


def test_the_weights_moving_average_ramps_up_then_decays_at_its_rate():
    from retrain.train.callbacks import WeightAveraging

    current = [np.zeros(3, np.float32)]
    averaging = WeightAveraging(0.9, lambda: current)
    current = [np.ones(3, np.float32)]
    averaging.on_batch_end(0, 4)  # decay min(0.9, 1/10): mostly the new weights
    np.testing.assert_allclose(averaging.averaged[0], 0.9)
    for step in range(1, 200):
        averaging.on_batch_end(step, 4)
    np.testing.assert_allclose(averaging.averaged[0], 1.0, atol=1e-6)
    current = [np.full(3, 11, np.float32)]
    averaging.on_batch_end(200, 4)  # past the ramp: decay 0.9
    np.testing.assert_allclose(averaging.averaged[0], 2.0, rtol=1e-6)


@pytest.mark.slow
def test_with_ema_the_average_is_validated_kept_and_resumed_not_the_last_weights(random_lite0, make_tree, tmp_path):
    from retrain.train.checkpoints import load_checkpoint

    paths, labels = _images(make_tree)
    _, result, lines = _tune(tmp_path, random_lite0, paths, labels, 1, epochs=1, ema_decay=0.9)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert any("weights averaged (EMA, decay 0.9)" in line for line in lines)
    assert len(checkpoint.averaged) == len(checkpoint.weights)
    assert any("of the weights' moving average" in line for line in lines)
    np.testing.assert_array_equal(result.top_layer.weights, checkpoint.averaged[-2])  # trainable: ..., top weights, bias
    assert not np.array_equal(checkpoint.averaged[-2], checkpoint.weights[-2])  # the average, not the last step's
    _, again, lines = _tune(tmp_path, random_lite0, paths, labels, 1, epochs=1, ema_decay=0.9)
    assert any("already done" in line for line in lines)
    np.testing.assert_array_equal(again.top_layer.weights, result.top_layer.weights)


MIRRORED_SCRIPT = """
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.train.test_fine_tuning import _images_at, _tune
from retrain.backbones import create_backbone
paths, labels = _images_at(Path({images!r}))
results = {{}}
base = create_backbone("efficientnet_lite0", Path("/nonexistent"), random_weights=True)
for name in ("auto", "mirrored"):
    tuned, result, lines = _tune(Path({tmp!r}) / name, base, paths, labels, 2, distribute=name, steps=2)
    print(name, lines[0])
    results[name] = np.concatenate([result.top_layer.weights.ravel(), tuned.module.layers["head_kernel"].numpy().ravel()])
np.save({out!r}, np.stack([results["auto"], results["mirrored"]]))
"""


def _images_at(root: Path):
    paths = sorted(root.rglob("*.jpg"))
    return paths, np.array([0 if "blue" in p.name else 1 for p in paths], np.int64)


@pytest.mark.slow
def test_the_mirrored_strategy_on_two_logical_cpus_matches_one_device(make_tree, tmp_path):
    tree = make_tree({"red": 4, "blue": 4})
    out = tmp_path / "weights.npy"
    script = MIRRORED_SCRIPT.format(root=str(Path(__file__).parents[2]), images=str(tree), tmp=str(tmp_path), out=str(out))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on the CPU" in result.stdout and "2 replicas" in result.stdout, result.stdout
    single, mirrored = np.load(out)
    changed = np.abs(single).max()
    np.testing.assert_allclose(mirrored, single, atol=1e-4 * changed, rtol=1e-3)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_on_two_local_processes_trains_one_model(make_tree, tmp_path):
    tree = make_tree({"red": 6, "blue": 6})
    ports = [_free_port(), _free_port()]
    workers = []
    for index in (0, 1):
        cluster = {"cluster": {"worker": [f"localhost:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(cluster))
        workers.append(subprocess.Popen(
            _retrain_args(tree, tmp_path / f"w{index}", "--distribute=multi_worker", "--fine_tune_steps=2",
                          "--image_size=224"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
        assert "on 2 replicas on 2 machines" in stdout, stdout
    pixels = np.stack([load_image(p, 224) for p in sorted(tree.rglob("*.jpg"))]).astype(np.float32)
    np.testing.assert_array_equal(_graph_output(tmp_path / "w0" / "g.pb", pixels), _graph_output(tmp_path / "w1" / "g.pb", pixels))


def test_multi_worker_without_tf_config_is_one_error_line(make_tree, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(retrain, ["--image_dir", str(make_tree({"red": 2, "blue": 2})), "--recipe", "finetune",
                                          "--distribute", "multi_worker", "--bottleneck_dir", str(tmp_path / "bn")])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --distribute multi_worker needs TF_CONFIG with 'cluster' and 'task' (see README)"


def _retrain_args(tree, out, *extra):
    return [str(BIN / "retrain"), f"--image_dir={tree}", f"--output_graph={out / 'g.pb'}",
            f"--output_labels={out / 'labels.txt'}", f"--bottleneck_dir={out.parent / 'bn'}",
            "--recipe=finetune", "--how_many_training_steps=20", "--fine_tune_batch_size=4", "--validation_percentage=25",
            "--testing_percentage=0", "--random_seed=2", *map(str, extra)]


def _graph_output(path: Path, pixels):
    from retrain.predict.prediction import load_model

    return load_model(path).predict(pixels)


@pytest.mark.slow
def test_kill_9_mid_fine_tuning_then_rerun_resumes_and_ends_where_an_uninterrupted_run_does(make_tree, tmp_path):
    tree = make_tree({"red": 6, "blue": 6})
    epochs = ("--fine_tune_epochs", 4)
    whole = subprocess.run(_retrain_args(tree, tmp_path / "whole", *epochs), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    out = tmp_path / "killed"
    process = subprocess.Popen(_retrain_args(tree, out, *epochs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    checkpoint = out / "g.finetune" / "checkpoint.npz"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "g.pb").exists()

    again = subprocess.run(_retrain_args(tree, out, *epochs), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Fine-tuning: resuming after epoch " in again.stdout, again.stdout
    resumed_after = int(again.stdout.split("resuming after epoch ")[1].split()[0])
    assert 1 <= resumed_after < 4
    assert f"Epoch {resumed_after}/4:" not in again.stdout and "Epoch 4/4:" in again.stdout
    pixels = np.stack([load_image(p, 224) for p in sorted(tree.rglob("*.jpg"))]).astype(np.float32)
    np.testing.assert_allclose(_graph_output(out / "g.pb", pixels), _graph_output(tmp_path / "whole" / "g.pb", pixels),
                               atol=2e-3)


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """One tiny --recipe finetune run, with the weights' moving average, that writes every export format."""
    from tests.conftest import write_colour_tree

    root = tmp_path_factory.mktemp("finetuned")
    tree = write_colour_tree(root / "images", {"red": 6, "blue": 6, "green": 6})
    out = root / "out"
    result = subprocess.run(_retrain_args(tree, out, "--fine_tune_steps", 3, "--fine_tune_ema_decay", 0.9, f"--saved_model_dir={out / 'saved'}",
                                          f"--tflite_output={out / 'dynamic.tflite'}", "--tflite_quantization=dynamic",
                                          "--tflite_representative_images=4"),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for mode in ("none", "float16", "int8"):
        exported = subprocess.run([str(BIN / "export_tflite"), f"--saved_model_dir={out / 'saved'}",
                                   f"--output={out / (mode + '.tflite')}", f"--quantization={mode}",
                                   f"--image_dir={tree}", "--representative_images=4", "--validation_percentage=25",
                                   "--testing_percentage=0", "--random_seed=2"], capture_output=True, text=True, timeout=900)
        assert exported.returncode == 0, exported.stderr[-3000:]
    return tree, out, result.stdout


@pytest.mark.slow
def test_recipe_finetune_prints_epochs_and_records_the_recipe_in_the_model(fine_tuned):
    import tensorflow as tf

    from retrain.card.formats import MODEL_CARD_NODE

    _, out, stdout = fine_tuned
    assert "Fine-tuning all of efficientnet_lite0" in stdout and "Epoch 1/1: train loss" in stdout
    assert "validation loss" in stdout and "AUC" in stdout and "images/s" in stdout
    graph_def = tf.compat.v1.GraphDef.FromString((out / "g.pb").read_bytes())
    (node,) = [n for n in graph_def.node if n.name == MODEL_CARD_NODE]
    metadata = json.loads(node.attr["value"].tensor.string_val[0])
    assert metadata["recipe"] == "finetune" and metadata["fine_tuning"]["layers"] == "all"
    assert metadata["fine_tuning"]["ema_decay"] == 0.9 and "weights averaged (EMA, decay 0.9)" in stdout
    assert "-ftall-" in metadata["backbone_identity"]


def _label_image(model: Path, image: Path) -> list[tuple[str, float]]:
    result = subprocess.run([str(BIN / "label_image"), f"--graph={model}", f"--image={image}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return [(line.split(" (score=")[0], float(line.split("(score=")[1].rstrip(")"))) for line in result.stdout.splitlines()]


# Each export against another one (the frozen graph, or for the frozen graph itself the SavedModel),
# within what its quantisation may change a probability by.
EXPORTS = {"g.pb": ("saved", 1e-4), "saved": ("g.pb", 1e-4), "none.tflite": ("g.pb", 1e-4),
           "float16.tflite": ("g.pb", 1e-2), "dynamic.tflite": ("g.pb", 3e-2), "int8.tflite": ("g.pb", 6e-2)}


@pytest.mark.slow
@pytest.mark.parametrize("model", list(EXPORTS))
def test_label_image_classifies_with_every_export_of_a_fine_tuned_model(fine_tuned, model, tmp_path):
    from tests.conftest import COLOURS, noisy_colour_image

    _, out, _ = fine_tuned
    image = tmp_path / "red.jpg"
    noisy_colour_image(COLOURS["red"], seed=1234).save(image)
    reference, tolerance = EXPORTS[model]
    predictions = _label_image(out / model, image)
    assert predictions[0][0] == "red", predictions
    expected = dict(_label_image(out / reference, image))
    assert sorted(label for label, _ in predictions) == sorted(expected) == ["blue", "green", "red"]
    for label, score in predictions:
        assert score == pytest.approx(expected[label], abs=tolerance), (label, predictions, reference, expected)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fine_tune_layers", "-1"], "--fine_tune_layers must be 'all', or 0 (off) or more"),
        (["--fine_tune_layers", "some"], "--fine_tune_layers must be 'all' or a number of blocks"),
        (["--fine_tune_layers", "18"], "efficientnet_lite0 has 17 blocks"),
        (["--recipe", "finetune", "--fine_tune_epochs", "0"], "--fine_tune_epochs must be at least 1"),
        (["--recipe", "finetune", "--crop_area", "1.5"], "--crop_area must be in (0, 1]"),
        (["--random_hue", "3"], "--random_hue applies to fine-tuning"),
        (["--recipe", "finetune", "--fine_tune_ema_decay", "1"], "--fine_tune_ema_decay must be 0 (off) or a number in (0, 1)"),
        (["--fine_tune_layers", "2", "--tfhub_module", "{tmp}"], "a TF Hub module can only be fine-tuned whole"),
    ],
)
def test_fine_tune_flag_mistakes_give_one_error_line(make_tree, tmp_path, extra, message):
    tree = make_tree({"red": 2, "blue": 2})
    extra = [e.format(tmp=tmp_path) for e in extra]
    result = CliRunner().invoke(retrain, ["--image_dir", str(tree), "--bottleneck_dir", str(tmp_path / "bn"), *extra])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "bn").exists()


PERCENTAGES = (30, 30)  # --validation_percentage, --testing_percentage


@pytest.mark.slow
@pytest.mark.parametrize("set_name, with_metadata", [("test", False), ("training", True)])
def test_an_image_unreadable_after_extraction_is_left_out_of_the_tuned_sets_with_a_warning(
        make_tree, tmp_path, monkeypatch, set_name, with_metadata):
    from retrain.train import fine_tuning

    tree = make_tree({"red": 6, "blue": 6})
    spoiled = next(p for p in sorted(tree.rglob("*.jpg")) if set_for_file(p, *PERCENTAGES) == set_name)
    real_fine_tune = fine_tuning.fine_tune

    def fine_tune_after_the_image_is_spoiled(*args, **kwargs):
        spoiled.write_bytes(b"not an image any more")
        return real_fine_tune(*args, **kwargs)

    monkeypatch.setattr(fine_tuning, "fine_tune", fine_tune_after_the_image_is_spoiled)
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age\n" + "".join(f"{p.stem},{40 + i}\n" for i, p in enumerate(tree.rglob("*.jpg"))))
    out = tmp_path / "out"
    result = run_cli(retrain, [
        "--image_dir", tree, "--output_graph", out / "g.pb", "--output_labels", out / "labels.txt",
        "--bottleneck_dir", tmp_path / "bn", "--recipe", "finetune", "--image_size", 64, "--fine_tune_layers", 1,
        "--fine_tune_steps", 1, "--fine_tune_epochs", 1, "--fine_tune_batch_size", 4, "--how_many_training_steps", 10,
        "--validation_percentage", PERCENTAGES[0], "--testing_percentage", PERCENTAGES[1], "--random_seed", 2,
        "--print_misclassified_test_images", *(["--metadata", metadata] if with_metadata else []),
    ])
    assert result.exit_code == 0, result.output
    named = [line for line in result.stderr.splitlines() if str(spoiled) in line and "after fine-tuning" in line]
    assert len(named) == 1 and named[0].startswith("warning: "), result.stderr
    assert (out / "g.pb").is_file()


def test_fine_tuning_whose_loss_turns_nan_stops_naming_the_epoch_and_keeps_no_checkpoint(make_tree, tmp_path):
    from retrain.backbones import create_backbone
    from retrain.errors import UserError
    from retrain.reporter import Reporter
    from retrain.train.fine_tuning import (
        FineTuneConfig,
        RunFolder,
        TuningData,
        fine_tune,
    )

    backbone = create_backbone("efficientnet_lite0", tmp_path, random_weights=True)
    paths, labels = _images(make_tree)
    pairs = list(zip(paths, labels.tolist()))
    config = FineTuneConfig(layers=1, epochs=1, learning_rate=1e38, batch_size=4, weight_decay=0.0)
    with pytest.raises(UserError, match=r"^fine-tuning diverged in epoch 1: the training loss became NaN or infinite; "
                                        r"try a lower FineTuneConfig.learning_rate \(now 1e\+38\)"):
        fine_tune(backbone, lambda: _clone(backbone), _starting_head(backbone),
                  TuningData(pairs, pairs[:4], 2, backbone.input_size), config, TrainingConfig(random_seed=0),
                  RunFolder(tmp_path / "run", "fp"), Reporter(log=print, warn=print))
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
