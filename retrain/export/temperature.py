"""A new temperature applied to a model already exported, in each format, so that it gives
softmax(log p / T) where it gave p, with no app code. The logits are unknown from outside, but
log p is them up to a constant per image, which the softmax ignores: dividing the softmax's
input by T is exactly the recalibrated model.

- `.tflite`: the SOFTMAX operator's beta (it computes softmax(beta * x)) times 1/T, every mode;
- frozen `.pb`: a constant 1/T and a Mul between the logits and the output softmax;
- SavedModel: the top layer's weights and bias divided by T (what training does when it folds
  the first temperature in), saved again with every signature.

Imports TensorFlow only for the .pb and SavedModel, like the rest of what reads a .tflite.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from retrain.errors import UserError

TEMPERATURE_NODE = "recalibrated_inverse_temperature"  # the .pb's constant 1/T; a second recalibration updates it
SCALED_LOGITS_NODE = "recalibrated_logits"
HEAD_VARIABLES = ("head_weights", "head_bias", "metadata_weights")  # retrain.export.graph.ServingModel's top layer


def _softmax_code(model: schema.ModelT) -> int | None:
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes or []]
    return codes.index(schema.BuiltinOperator.SOFTMAX) if schema.BuiltinOperator.SOFTMAX in codes else None


def tflite_with_temperature(model_bytes: bytes, temperature: float, source: str) -> bytes:
    """The .tflite whose one SOFTMAX divides its input by `temperature` too. The result has no
    metadata zip appended: retrain.export.tflite_metadata.with_metadata attaches it again."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    code = _softmax_code(model)
    softmaxes = [op for graph in model.subgraphs for op in graph.operators or [] if op.opcodeIndex == code]
    if code is None or len(softmaxes) != 1:
        raise UserError(f"{source}: has {len(softmaxes)} softmax operations, not the one a retrain .tflite ends with, "
                        "so no temperature can be applied to it")
    (softmax,) = softmaxes
    if softmax.builtinOptions is None:
        softmax.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
        softmax.builtinOptions = schema.SoftmaxOptionsT()
        softmax.builtinOptions.beta = 1.0
    softmax.builtinOptions.beta = float(softmax.builtinOptions.beta / temperature)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def graph_def_with_temperature(graph_def, output_name: str, temperature: float, source: str) -> None:
    """Divides the logits feeding the softmax `output_name` of a frozen graph by `temperature`,
    in place; the class activation maps output, computed from the features, is unchanged."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    existing = nodes.get(TEMPERATURE_NODE)
    if existing is not None:  # recalibrated before: one constant, the product of both
        inverse = float(tf.make_ndarray(existing.attr["value"].tensor)) / temperature
        existing.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.float32(inverse)))
        return
    output = nodes.get(output_name)
    if output is None or output.op != "Softmax":
        raise UserError(f"{source}: its output {output_name!r} is not a softmax, so no temperature can be applied to it")
    constant = graph_def.node.add()
    constant.name, constant.op = TEMPERATURE_NODE, "Const"
    constant.attr["dtype"].type = tf.float32.as_datatype_enum
    constant.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.float32(1.0 / temperature)))
    scaled = graph_def.node.add()
    scaled.name, scaled.op = SCALED_LOGITS_NODE, "Mul"
    scaled.input.extend([output.input[0], TEMPERATURE_NODE])
    scaled.attr["T"].type = tf.float32.as_datatype_enum
    output.input[0] = SCALED_LOGITS_NODE


def save_saved_model_with_temperature(source: Path, destination: Path, temperature: float) -> None:
    """The SavedModel at `source` saved to `destination` with its top layer divided by
    `temperature`, every signature kept (the class activation maps' scale changes by 1/T, their
    shape does not). `destination`'s assets.extra is left for the caller to fill."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(source))
    variables = [getattr(loaded, name, None) for name in HEAD_VARIABLES]
    if variables[0] is None or variables[1] is None:
        raise UserError(f"{source}: a SavedModel without retrain's top layer variables ({', '.join(HEAD_VARIABLES[:2])}), "
                        "so no temperature can be applied to it")
    for variable in variables:
        if variable is not None:
            variable.assign(variable / temperature)
    tf.saved_model.save(loaded, str(destination), signatures=dict(loaded.signatures))
