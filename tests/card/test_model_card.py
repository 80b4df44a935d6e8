"""The typed model card reads every card retrain has written, writes it back byte for byte,
and turns a damaged or too-new card into one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from retrain.card.formats import card_bytes, parse_card, read_model_card
from retrain.card.model_card import CARD_VERSION, ModelCard
from retrain.cli import label_image
from retrain.errors import UserError
from retrain.json_text import dumps
from tests.conftest import SQUARE_COLOURS, as_card, run_cli, square_image

# Cards written by retrain before the card was typed (commit 296fcde): a frozen graph's with
# fine-tuning, patient metadata, subgroups and operating points; an int8 .tflite sidecar.
WRITTEN_BEFORE = Path(__file__).parent / "cards"


@pytest.mark.parametrize("name", sorted(p.name for p in WRITTEN_BEFORE.glob("*.json")))
def test_a_card_written_before_is_written_back_byte_for_byte(name):
    text = (WRITTEN_BEFORE / name).read_text()
    indent = 2 if text.startswith("{\n") else None
    card = parse_card(text, name)
    assert dumps(card.to_json(), indent=indent) == text.rstrip("\n")


def test_keys_a_newer_retrain_wrote_are_kept():
    card = as_card({"labels": ["a", "b"], "made_by_a_newer_retrain": {"x": 1}})
    assert card.to_json()["made_by_a_newer_retrain"] == {"x": 1}


def test_a_card_of_a_newer_version_is_refused_in_one_line_saying_so():
    with pytest.raises(UserError, match=r"m\.json: a model card of version 99, newer than this retrain reads"):
        ModelCard.from_json({"labels": ["a"], "card_version": 99, "input_name": "i", "output_name": "o",
                             "input_size": 8}, "m.json")
    assert CARD_VERSION == 1 and "card_version" not in as_card({"labels": ["a"]}).to_json()


@pytest.mark.parametrize("damage, detail", [
    ({"labels": "ab"}, "\"labels\" is not a list of names"),
    ({"input_size": "big"}, "\"input_size\" is 'big'"),
    ({"calibration": {"temperature": 1.0}}, "missing"),
    ({"operating_points": [{"label": "a"}]}, "no 'target' entry"),
])
def test_a_damaged_entry_is_one_line_naming_the_card(damage, detail):
    data = {"labels": ["a", "b"], "input_name": "input", "output_name": "out", "input_size": 8, **damage}
    with pytest.raises(UserError) as raised:
        ModelCard.from_json(data, "g.pb")
    assert str(raised.value).startswith("g.pb: the model card is damaged (") and detail in str(raised.value)


def test_every_format_reads_the_same_card(square_model):
    cards = [read_model_card(square_model / "graph.pb", "pb"), read_model_card(square_model / "saved_model",
                                                                               "saved_model")]
    assert cards[0] == cards[1] and cards[0].labels == tuple(sorted(SQUARE_COLOURS))
    assert json.loads(card_bytes(cards[0])) == cards[0].to_json()


def test_a_damaged_pb_card_is_one_error_line_not_a_traceback(square_model, tmp_path):
    import tensorflow as tf

    from retrain.card.formats import MODEL_CARD_NODE

    graph_def = tf.compat.v1.GraphDef.FromString((square_model / "graph.pb").read_bytes())
    node = next(n for n in graph_def.node if n.name == MODEL_CARD_NODE)
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto("{not json"))
    damaged = tmp_path / "damaged.pb"
    damaged.write_bytes(graph_def.SerializeToString())
    image = tmp_path / "red.png"
    square_image(SQUARE_COLOURS["red"], seed=3)[0].save(image)
    printed = run_cli(label_image, ["--graph", damaged, "--image", image])
    assert printed.exit_code == 1 and "Traceback" not in printed.output
    assert printed.stderr.splitlines() == [f"error: {damaged}: not a readable retrain model card "
                                           "(Expecting property name enclosed in double quotes: line 1 column 2 "
                                           "(char 1))"]


def test_a_saved_model_card_read_and_written_back_is_the_same_file(square_model, tmp_path):
    from retrain.card.formats import saved_model_card_path, write_saved_model_card

    copy = tmp_path / "sm"
    shutil.copytree(square_model / "saved_model", copy)
    before = saved_model_card_path(copy).read_bytes()
    write_saved_model_card(copy, read_model_card(copy, "saved_model"))
    assert saved_model_card_path(copy).read_bytes() == before


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]"])
def test_a_damaged_saved_model_card_is_one_line_naming_the_file(square_model, tmp_path, damage):
    damaged = tmp_path / "damaged"
    shutil.copytree(square_model / "saved_model", damaged)
    card = damaged / "assets.extra" / "retrain_metadata.json"
    card.write_bytes(damage)
    printed = run_cli(label_image, ["--graph", damaged, "--image", _red_square(tmp_path)])
    assert printed.exit_code == 1 and "Traceback" not in printed.output
    assert printed.stderr.splitlines()[-1].startswith(f"error: {card}: not a")


def _red_square(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    square_image(SQUARE_COLOURS["red"], seed=77)[0].save(path)
    return path


def test_colour_constancy_is_read_written_back_and_said_in_words():
    from retrain.backbones.colour import DESCRIPTION
    from retrain.card.markdown import model_card_markdown

    card = as_card({"labels": ["a", "b"], "colour_constancy": DESCRIPTION})
    assert card.colour_constancy == DESCRIPTION and card.to_json()["colour_constancy"] == DESCRIPTION
    assert "colour constancy inside the model" in model_card_markdown(card)
    plain = as_card({"labels": ["a", "b"]})
    assert plain.colour_constancy is None and "colour_constancy" not in plain.to_json()
    with pytest.raises(UserError, match="colour_constancy"):
        as_card({"labels": ["a", "b"], "colour_constancy": True})


def test_an_ensembles_members_are_read_written_back_and_listed_in_words():
    from retrain.card.markdown import model_card_markdown

    members = [{"path": "a/saved_model", "architecture": "efficientnet_lite0", "input_size": 224,
                "backbone_identity": "efficientnet_lite0-1-c1", "recipe": "poets", "validation_auc": 0.91},
               {"path": "b/saved_model", "architecture": "efficientnet_lite2", "input_size": 260,
                "backbone_identity": "efficientnet_lite2-2-c1", "recipe": "finetune", "colour_constancy": "Shades of Gray"}]
    card = as_card({"labels": ["a", "b"], "architecture": "ensemble", "recipe": "ensemble", "members": members})
    assert [m.input_size for m in card.members] == [224, 260] and card.members[1].validation_auc is None
    assert parse_card(card_bytes(card), "again").to_json()["members"] == members
    words = model_card_markdown(card)
    assert "an ensemble of 2 models" in words
    assert "  - a/saved_model: efficientnet_lite0 at 224 px, recipe poets, validation mean AUC 0.910" in words
    assert "  - b/saved_model: efficientnet_lite2 at 260 px, recipe finetune, colour constancy" in words
    assert "members" not in as_card({"labels": ["a", "b"]}).to_json()
