"""The VQGAN loader: taming configs, Lightning/plain/safetensors checkpoints, refusal of unsafe pickles."""

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import yaml

from common.errors import UserError
from facetokens.vqgan import FFHQ_CONFIG, VQGANConfig
from facetokens.vqgan_files import convert_vqgan, load_vqgan, read_checkpoint, read_vqgan_config, weights_digest
from samples.tiny_vqgan import TINY_CONFIG, lightning_checkpoint, tiny_vqgan, write_tiny_vqgan

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vqgan")
    paths = write_tiny_vqgan(folder, seed=3)
    model = tiny_vqgan(seed=3)
    torch.save(model.state_dict(), folder / "plain.pt")
    return {**paths, "plain": folder / "plain.pt", "folder": folder, "model": model}


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 256, 256, generator=gen) * 2 - 1


def test_project_yaml_is_a_net2net_transformer_config(tiny):
    doc = yaml.safe_load(tiny["config"].read_text())
    assert doc["model"]["target"] == "taming.models.cond_transformer.Net2NetTransformer"
    assert read_vqgan_config(tiny["config"]) == TINY_CONFIG


def test_plain_vqgan_config_and_ffhq_shapes(tmp_path):
    plain = {
        "model": {
            "base_learning_rate": 4.5e-6,
            "target": "taming.models.vqgan.VQModel",
            "params": {
                "embed_dim": 256,
                "n_embed": 1024,
                "ddconfig": dict(FFHQ_CONFIG.ddconfig),
                "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"},
            },
        }
    }
    (tmp_path / "vqgan.yaml").write_text(yaml.safe_dump(plain))
    config = read_vqgan_config(tmp_path / "vqgan.yaml")
    assert config == FFHQ_CONFIG
    assert (config.grid, config.codes_per_image) == (16, 256)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"model": {"target": "taming.models.vqgan.GumbelVQ", "params": {}}}, "only taming.models.vqgan.VQModel"),
        (
            {"model": {"target": "taming.models.vqgan.VQModel", "params": {"embed_dim": 4}}},
            "expected embed_dim, n_embed",
        ),
        (
            {
                "model": {
                    "target": "taming.models.vqgan.VQModel",
                    "params": {"embed_dim": 4, "n_embed": 8, "ddconfig": {"ch": 32}},
                }
            },
            "ddconfig lacks",
        ),
    ],
)
def test_bad_configs_are_user_errors(tmp_path, doc, message):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=message):
        read_vqgan_config(tmp_path / "c.yaml")


def test_lightning_plain_and_safetensors_give_the_same_codes(tiny, images, tmp_path):
    converted = convert_vqgan(tiny["config"], tiny["ckpt"], tmp_path / "vqgan.safetensors")
    assert converted.read_bytes()[:8] != b"PK\x03\x04"
    models = [
        load_vqgan(tiny["config"], tiny["ckpt"], with_decoder=False),
        load_vqgan(tiny["config"], tiny["plain"], with_decoder=False),
        load_vqgan(None, converted, with_decoder=False),
    ]  # safetensors carries its config
    codes = [m.encode_to_codes(images[:1]) for m in models]
    assert codes[0].shape == (1, 256) and codes[0].dtype == torch.int64
    assert 0 <= int(codes[0].min()) and int(codes[0].max()) < TINY_CONFIG.n_embed
    assert torch.equal(codes[0], codes[1]) and torch.equal(codes[0], codes[2])
    digests = {weights_digest(read_checkpoint(p)[0]) for p in (tiny["ckpt"], tiny["plain"], converted)}
    assert len(digests) == 1


def test_lightning_checkpoint_ignores_the_transformer_and_keeps_the_prefix_stripped(tiny):
    weights, config = read_checkpoint(tiny["ckpt"])
    assert config is None
    assert "quantize.embedding.weight" in weights and not any(k.startswith("transformer") for k in weights)


def test_encode_decode_shapes_and_ranges(tiny, images):
    model = tiny["model"]
    codes = model.encode_to_codes(images)
    assert codes.shape == (2, 256)
    decoded = model.decode_codes(codes[:1])
    assert decoded.shape == (1, 3, 256, 256) and float(decoded.min()) >= 0 and float(decoded.max()) <= 1
    bf16 = model.encode_to_codes(images, bf16=True)
    assert (bf16 == codes).float().mean() > 0.5


class _FakeLightningModules:
    """Real Lightning is not installed: pickle needs importable classes, so fake modules stand in while saving."""

    names = (
        "pytorch_lightning",
        "pytorch_lightning.callbacks",
        "pytorch_lightning.callbacks.model_checkpoint",
        "pytorch_lightning.utilities",
        "pytorch_lightning.utilities.parsing",
    )

    def __enter__(self):
        for name in self.names:
            sys.modules[name] = types.ModuleType(name)
        callbacks, parsing = sys.modules[self.names[2]], sys.modules[self.names[4]]
        callbacks.ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": self.names[2]})
        parsing.AttributeDict = type("AttributeDict", (dict,), {"__module__": self.names[4]})
        return callbacks.ModelCheckpoint, parsing.AttributeDict

    def __exit__(self, *exc):
        for name in self.names:
            sys.modules.pop(name, None)


def test_real_style_lightning_pickle_loads_without_lightning(tiny, tmp_path, images):
    """The FFHQ last.ckpt names Lightning classes and numpy scalars: weights_only refuses, our unpickler loads."""
    ckpt = lightning_checkpoint(tiny["model"])
    with _FakeLightningModules() as (ModelCheckpoint, AttributeDict):
        ckpt["callbacks"] = {ModelCheckpoint: {"best_model_score": np.float64(4.25), "monitor": "val/loss"}}
        ckpt["hyper_parameters"] = AttributeDict(lr=4.5e-6, ckpt_path="x")
        torch.save(ckpt, tmp_path / "last.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "last.ckpt", weights_only=True)
    model = load_vqgan(tiny["config"], tmp_path / "last.ckpt", with_decoder=False)
    assert torch.equal(model.encode_to_codes(images[:1]), tiny["model"].encode_to_codes(images[:1]))


def test_legacy_torch_format_loads(tiny, tmp_path):
    torch.save(tiny["model"].state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    weights, _ = read_checkpoint(tmp_path / "legacy.pt")
    assert weights_digest(weights) == weights_digest(tiny["model"].state_dict())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvilInIgnoredNamespace:
    """A call into a data-only library (numpy.save would write a file): it must become an inert placeholder."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return np.save, (str(self.marker), np.zeros(1))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tiny, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = {"state_dict": dict(tiny["model"].state_dict()), "payload": _Evil(marker)}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="refused"):
        read_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="refused"):
        load_vqgan(tiny["config"], tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_calls_into_ignored_libraries_are_inert(tiny, tmp_path):
    marker = tmp_path / "written.npy"
    ckpt = {"state_dict": dict(tiny["model"].state_dict()), "payload": _EvilInIgnoredNamespace(marker)}
    torch.save(ckpt, tmp_path / "odd.ckpt")
    weights, _ = read_checkpoint(tmp_path / "odd.ckpt")
    assert "encoder.conv_in.weight" in weights
    assert not marker.exists()


def test_wrong_checkpoints_are_user_errors(tiny, tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match="unreadable"):
        read_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(UserError, match="not found"):
        read_checkpoint(tmp_path / "nope.ckpt")
    torch.save({"state_dict": {"transformer.x": torch.zeros(1)}}, tmp_path / "transformer_only.ckpt")
    with pytest.raises(UserError, match="no VQGAN weights"):
        read_checkpoint(tmp_path / "transformer_only.ckpt")
    bigger = VQGANConfig(TINY_CONFIG.embed_dim, TINY_CONFIG.n_embed, {**TINY_CONFIG.ddconfig, "ch": 64})
    with pytest.raises(UserError, match="shape"):
        load_vqgan(bigger, tiny["ckpt"])
    with pytest.raises(UserError, match="carries no config"):
        load_vqgan(None, tiny["ckpt"])
