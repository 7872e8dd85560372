"""The automatic weights' type: bfloat16 where the CPU has AMX or AVX512-BF16, float32 elsewhere, as asked otherwise."""

from __future__ import annotations

import pytest
import torch

from o1_embedder import build_model, load_model, save_model
from o1_embedder.dtypes import fast_dtype


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_backbone):
    return save_model(build_model(str(tiny_backbone)), tmp_path_factory.mktemp("dtype") / "m")


def _weights(model) -> torch.dtype:
    return next(model[0].model.parameters()).dtype


@pytest.mark.parametrize("flags, expected", [(("avx512_bf16",), torch.bfloat16),
                                             (("amx_bf16", "avx512_bf16"), torch.bfloat16), ((), torch.float32)])
def test_automatic_choice_follows_the_cpu(saved, monkeypatch, flags, expected, caplog):
    monkeypatch.delenv("O1_EMBEDDER_DTYPE", raising=False)
    monkeypatch.setattr("o1_embedder.dtypes.cpu_bf16_flags", lambda: flags)
    with caplog.at_level("INFO", logger="o1_embedder.model.loading"):
        model = load_model(str(saved))
    assert _weights(model) == expected
    choice = model[0].dtype_choice
    assert choice["loaded"] == "float32" and choice["reason"].startswith("automatic")
    if flags:
        assert f"running the model in bfloat16 (automatic: this CPU has {', '.join(flags)}" in caplog.text
        with pytest.warns(UserWarning, match="cast to automatically"):
            save_model(model, saved.parent / f"cast-{len(flags)}")


def test_an_explicit_dtype_or_the_environment_wins(saved, monkeypatch):
    monkeypatch.setattr("o1_embedder.dtypes.cpu_bf16_flags", lambda: ("avx512_bf16",))
    monkeypatch.delenv("O1_EMBEDDER_DTYPE", raising=False)
    assert _weights(load_model(str(saved), dtype="float32")) == torch.float32
    monkeypatch.setenv("O1_EMBEDDER_DTYPE", "float32")
    assert _weights(load_model(str(saved))) == torch.float32
    assert _weights(load_model(str(saved), dtype="bfloat16")) == torch.bfloat16
    with pytest.raises(ValueError, match="floating-point"):
        load_model(str(saved), dtype="int8")


def test_fast_dtype_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr("o1_embedder.dtypes.cpu_bf16_flags", lambda: ())
    assert fast_dtype() == "float32"
    monkeypatch.setattr("o1_embedder.dtypes.cpu_bf16_flags", lambda: ("amx_bf16",))
    assert fast_dtype() == "bfloat16"
