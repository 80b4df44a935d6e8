"""Where each model format keeps its model card, with one reader and one writer each:
- a frozen graph (`.pb`): a string constant node;
- a SavedModel: `assets.extra/retrain_metadata.json`;
- a `.tflite`: the sidecar `model.tflite.json` beside it, and the same card attached inside the
  model as a TFLite metadata associated file (`model_card.json`; retrain.export.tflite_metadata
  writes it), read when the sidecar is missing.

The node and file are called "retrain_metadata" because models exported since the first
release carry them under that name; renaming them would orphan every card already written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from retrain.card.model_card import ModelCard
from retrain.errors import UserError
from retrain.json_text import dumps
from retrain.paths import write_atomically

MODEL_CARD_NODE = "retrain_metadata"  # the .pb's constant; the name is part of the file format
MODEL_CARD_FILE = "retrain_metadata.json"  # in a SavedModel's assets.extra; likewise
SIDECAR_SUFFIX = ".json"
TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of every .tflite
EMBEDDED_CARD_FILE = "model_card.json"  # the card attached to a .tflite's metadata
LABELS_FILE = "labels.txt"  # the class names attached to its probability output


def is_tflite_file(path: Path) -> bool:
    if path.suffix.lower() == ".tflite":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == TFLITE_IDENTIFIER
    except OSError:
        return False


def sidecar_path(model_path: Path) -> Path:
    """model.tflite -> model.tflite.json"""
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def saved_model_card_path(directory: Path) -> Path:
    return Path(directory) / "assets.extra" / MODEL_CARD_FILE


def parse_card(text: str | bytes, source: str) -> ModelCard:
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{source}: not a readable retrain model card ({e})") from e
    return ModelCard.from_json(data, source)


def _read_file(path: Path) -> ModelCard | None:
    if not path.exists():
        return None
    try:
        text = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: not a readable retrain model card ({e.strerror or e})") from e
    return parse_card(text, str(path))


def card_bytes(card: ModelCard, indent: int | None = 2) -> bytes:
    return dumps(card.to_json(), indent=indent).encode()


def read_sidecar(model_path: Path) -> ModelCard | None:
    """The model card beside a .tflite; None when there is no sidecar."""
    return _read_file(sidecar_path(model_path))


def attached_files(model_path: Path) -> dict[str, bytes]:
    """The files attached to a .tflite's metadata (a zip appended to the model), by name; empty
    for a .tflite without any."""
    try:
        attached = zipfile.ZipFile(model_path)
    except zipfile.BadZipFile:
        return {}
    except OSError as e:
        raise UserError(f"{model_path}: cannot read ({e.strerror or e})") from e
    try:
        with attached:
            return {name: attached.read(name) for name in attached.namelist()}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(f"{model_path}: the files attached to its TFLite metadata are damaged ({e})") from e


def read_embedded_card(model_path: Path) -> ModelCard | None:
    """The model card attached to a .tflite's metadata; None when there is none."""
    text = attached_files(model_path).get(EMBEDDED_CARD_FILE)
    return None if text is None else parse_card(text, f"{model_path} (its attached {EMBEDDED_CARD_FILE})")


def read_tflite_card(model_path: Path) -> ModelCard | None:
    """The sidecar's card (it may have been updated since export), else the one inside the model."""
    return read_sidecar(model_path) or read_embedded_card(model_path)


def write_sidecar(model_path: Path, card: ModelCard) -> None:
    write_atomically(sidecar_path(model_path), card_bytes(card))


def read_saved_model_card(directory: Path) -> ModelCard | None:
    """The model card in a SavedModel folder; None when it has none (not from retrain)."""
    return _read_file(saved_model_card_path(directory))


def write_saved_model_card(directory: Path, card: ModelCard) -> None:
    write_atomically(saved_model_card_path(directory), card_bytes(card))


def _card_node(graph_def):
    return next((node for node in graph_def.node if node.name == MODEL_CARD_NODE), None)


def read_graph_card(graph_def, source: Path | str) -> ModelCard | None:
    """The model card a frozen graph from retrain carries as a constant node; None for one
    from elsewhere (tensorflow-for-poets)."""
    import tensorflow as tf

    node = _card_node(graph_def)
    if node is None:
        return None
    try:
        text = tf.make_ndarray(node.attr["value"].tensor).item()
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: its model card node {MODEL_CARD_NODE!r} holds no text") from e
    return parse_card(text, str(source))


def write_graph_card(graph_def, card: ModelCard) -> None:
    """Stores `card` in `graph_def`, replacing the one it carries, if any."""
    import tensorflow as tf

    node = _card_node(graph_def)
    if node is None:
        node = graph_def.node.add()
        node.name = MODEL_CARD_NODE
        node.op = "Const"
        node.attr["dtype"].type = tf.string.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(dumps(card.to_json())))


def read_graph_def(path: Path, name: str = "load.path"):
    """A frozen graph's GraphDef; a file that is not one is the user's mistake, in one line
    naming the parameter that gave it (`name`)."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise UserError(f"{name} {path}: not a TensorFlow GraphDef (.pb) file") from e
    if not graph_def.node:
        raise UserError(f"{name} {path}: not a TensorFlow GraphDef (.pb) file (no nodes)")
    return graph_def


def model_kind(path: Path) -> str:
    """ "saved_model", "tflite" or "pb": how a model at `path` keeps its card."""
    if Path(path).is_dir():
        return "saved_model"
    return "tflite" if is_tflite_file(Path(path)) else "pb"


def read_model_card(path: Path, kind: str, name: str = "load.path") -> ModelCard | None:
    """The card of the model at `path`, of any format; None for a model retrain did not export.
    `name`: the parameter that gave the path, for the line saying it is not a model."""
    if kind == "tflite":
        return read_tflite_card(path)
    if kind == "saved_model":
        if not (Path(path) / "saved_model.pb").exists():
            raise UserError(f"{name} {path}: a folder, but not a SavedModel (no saved_model.pb)")
        return read_saved_model_card(path)
    return read_graph_card(read_graph_def(path, name), path)


def missing_card_place(path: Path, kind: str) -> str:
    """Where a model of `kind` would keep the card it lacks, for the line saying it has none."""
    return {"tflite": f"no {sidecar_path(Path(path)).name} beside it", "pb": "no model card node",
            "saved_model": f"no assets.extra/{MODEL_CARD_FILE}"}[kind]


def copy_files(kind: str, output: Path) -> dict[str, Path]:
    """Every file a copy at `output` writes besides the card in words, by what it is ("": the
    model itself); a SavedModel's card sits inside its new folder."""
    return {"": output, **({"sidecar": sidecar_path(output)} if kind == "tflite" else {})}


def write_copy_with_card(path: Path, kind: str, output: Path, card: ModelCard, tflite_bytes: bytes | None = None,
                         graph_def=None, write_saved_model: Callable[[Path], None] | None = None) -> None:
    """A copy of the model at `path` at `output`, carrying `card`; the weights are untouched
    unless one of the last three is given. A SavedModel is built beside `output` and renamed into
    place whole. `tflite_bytes`: the .tflite to write instead of the original's bytes (its
    metadata carrying `card`); `graph_def`: the .pb's GraphDef to write instead of the original's;
    `write_saved_model(folder)`: writes the SavedModel into the folder instead of copying it."""
    if kind == "pb":
        graph_def = read_graph_def(path) if graph_def is None else graph_def
        write_graph_card(graph_def, card)
        write_atomically(output, graph_def.SerializeToString())
    elif kind == "tflite":
        write_atomically(output, Path(path).read_bytes() if tflite_bytes is None else tflite_bytes)
        write_sidecar(output, card)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        try:
            if write_saved_model is None:
                shutil.copytree(path, building, dirs_exist_ok=True)
            else:
                write_saved_model(building)
            write_saved_model_card(building, card)
            os.rename(building, output)
        finally:
            shutil.rmtree(building, ignore_errors=True)
