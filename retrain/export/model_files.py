"""The files a run writes for its model: the frozen graph and labels, the SavedModel asked
for, each with its model card in words beside it, and the intermediate graphs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from retrain.card.markdown import model_card_markdown_path, write_model_card_markdown
from retrain.card.model_card import ModelCard
from retrain.export.graph import ServingModel, export_frozen_graph, export_saved_model, model_card, write_labels
from retrain.reporter import Reporter
from retrain.train.top_layer import TopLayer


@dataclass(frozen=True)
class ExportedFiles:
    graph: Path
    labels: Path
    saved_model: Path | None
    training_plot: Path
    tflite: Path | None


def export_model(serving: ServingModel, card: ModelCard, labels: list[str], output_graph: Path, output_labels: Path,
                 saved_model_dir: Path | None, reporter: Reporter) -> None:
    """The frozen graph and labels, then the SavedModel if asked for, each with its model card in words."""
    export_frozen_graph(serving, card, output_graph)
    write_labels(output_labels, labels)
    write_model_card_markdown(card, model_card_markdown_path(output_graph))
    reporter.log(f"Wrote {output_graph}, {output_labels} and {model_card_markdown_path(output_graph)}")
    if saved_model_dir:
        export_saved_model(serving, card, saved_model_dir)
        write_model_card_markdown(card, model_card_markdown_path(saved_model_dir, saved_model=True))
        reporter.log(f"Wrote SavedModel {saved_model_dir}")


def intermediate_saver(backbone, labels: list[str], final_tensor_name: str, folder: Path,
                       log: Callable[[str], None]) -> Callable[[int, TopLayer], None]:
    """What writes the graph of step N, intermediate_N.pb in `folder`, while the top layer trains."""
    card = model_card(backbone, labels, final_tensor_name)

    def save(step: int, layer: TopLayer) -> None:
        target = Path(folder).expanduser() / f"intermediate_{step}.pb"
        export_frozen_graph(ServingModel(backbone, layer, final_tensor_name), card, target,
                            "MonitorConfig.intermediate_graphs_dir")
        log(f"Saved intermediate graph {target}")

    return save
