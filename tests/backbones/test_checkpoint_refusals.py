"""Issue 29.7: checkpoint refusals in our words. torch's own message (cut at 160 characters, ending "Re-running
`torch.") reads as advice to turn ``weights_only`` off; an unloadable pytorch_model.bin for an HF backbone was a
traceback. Each is one line saying what the file holds and why it is refused; nothing in it runs."""

from __future__ import annotations

import os

import pytest
import torch

from medtransfer.backbones.registry import read_state_dict
from medtransfer.errors import MedtransferError


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _files(tmp_path):
    marker = tmp_path / "executed"
    code = tmp_path / "code.bin"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, code)
    torn = tmp_path / "torn.bin"
    torn.write_bytes(code.read_bytes()[:64])
    return marker, code, torn


def test_a_checkpoint_holding_objects_is_refused_for_that_reason(tmp_path):
    marker, code, torn = _files(tmp_path)
    with pytest.raises(MedtransferError) as refused:
        read_state_dict(code)
    message = str(refused.value)
    assert "holds code or Python objects that are not tensors" in message and "e.g. " in message
    assert "Re-running" not in message and "weights_only" not in message and "\n" not in message
    with pytest.raises(MedtransferError, match="damaged or not a torch/safetensors checkpoint"):
        read_state_dict(torn)
    assert not marker.exists()


@pytest.mark.parametrize("which", ["code", "torn"])
def test_an_unloadable_pytorch_model_bin_for_an_hf_backbone_is_one_line(tmp_path, which):
    from transformers import ViTConfig, ViTModel

    from medtransfer.backbones.families.hf_vits import hf_state_dict_file

    marker, code, torn = _files(tmp_path)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=16)
    with pytest.raises(MedtransferError) as refused:
        hf_state_dict_file(ViTModel, config, code if which == "code" else torn)
    message = str(refused.value)
    assert "\n" not in message and "Re-running" not in message
    assert ("holds code or Python objects" if which == "code" else "damaged or not a torch") in message
    assert not marker.exists()
