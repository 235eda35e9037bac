"""Another VQGAN geometry end to end (the paper's Table 5a): a tiny random f=8 VQGAN with 8,192 codes in the real
checkpoint format -> 32 x 32 = 1,024 codes a face in the shards, recorded there; preview, train and the session
(generation and evaluation's encoder and decoder) with it."""

import json

import pytest
from corpus_fixture import FACES, write_corpus
from torch.nn import Linear

from common.errors import UserError
from facetokens import shards
from facetokens.config import TokenizeConfig
from facetokens.preview import preview
from facetokens.tokenize_images import tokenize_images
from samples.tiny_vqgan import TINY_F8_CONFIG, write_tiny_vqgan
from trainer import checkpoint
from trainer.config import load_config, save_config
from trainer.data import DataConfig
from trainer.inference import load_session
from trainer.train import TrainConfig, train
from trainer.weights import load_model

SOME = {k: FACES[k] for k in ("celeba/000001", "celeba/000002", "ffhq/00001", "ffhq/00002", "fs2k/rgba_1")}
F8 = {"image_size": 256, "downsampling": 8, "grid": [32, 32], "codes_per_face": 1024, "codebook_size": 8192}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("f8")
    corpus = write_corpus(folder, SOME)
    vqgan = write_tiny_vqgan(folder / "vqgan", seed=1, config=TINY_F8_CONFIG)
    tokenize_images(
        corpus,
        folder / "shards",
        vqgan_config=vqgan["config"],
        vqgan_ckpt=vqgan["ckpt"],
        config=TokenizeConfig(gpus=0, batch_size=4, loader_workers=0, shard_size=4),
        progress=False,
    )
    return folder, vqgan


def test_the_shards_record_the_geometry(tokenized):
    folder, _ = tokenized
    index = json.loads((folder / "shards" / "index.json").read_text())
    assert index["geometry"] == F8 and shards.geometry(folder / "shards") == F8
    stats = json.loads((folder / "shards" / "train" / "shard-000000.stats.json").read_text())
    assert stats["codes_per_face"] == 1024
    faces = list(shards.read_samples(folder / "shards"))
    assert len(faces) == 5 and all(len(codes) == 1024 and codes.max() < 8192 for _, codes in faces)
    assert max(int(codes.max()) for _, codes in faces) >= 1024  # the codes use the larger codebook


def test_preview_decodes_the_f8_codes_and_refuses_another_vqgan(tokenized, tmp_path):
    folder, vqgan = tokenized
    summary = preview(
        folder / "shards", tmp_path / "p", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"], samples=2
    )
    assert summary["faces"] == 2 and summary["mean_psnr"] is not None
    other = write_tiny_vqgan(tmp_path / "f16")
    with pytest.raises(UserError, match=r"codes_per_face 256 \(the shards: 1024\); codebook_size 1024 \(the shards: "):
        preview(folder / "shards", tmp_path / "q", vqgan_config=other["config"], vqgan_ckpt=other["ckpt"], samples=2)


def test_train_fits_a_preset_to_the_shards_and_checks_a_config_file(tokenized, tmp_path):
    folder, vqgan = tokenized
    config = TrainConfig(
        model="tiny",
        batch_size=4,
        micro_batch_size=4,
        max_steps=2,
        save_every=2,
        val_every=2,
        data=DataConfig(shuffle_buffer=4, pool=1),
    )
    train(folder / "shards", tmp_path / "run", config, progress=False)
    fitted = load_model(checkpoint.latest(tmp_path / "run")).config
    tiny = load_config("tiny")
    assert (fitted.image_tokens, fitted.image_vocab_size) == (1024, 8192)
    assert fitted.seq_length == 1024 + tiny.seq_length - tiny.image_tokens and fitted.max_positions >= fitted.seq_length
    longer = TrainConfig(**{**config.__dict__, "max_steps": 3})
    summary = train(folder / "shards", tmp_path / "run", longer, resume=True, reschedule=True, progress=False)
    assert summary["resumed_from"] == 2  # the fitted preset is the run's config on resume too
    save_config(tiny, tmp_path / "tiny.json")
    with pytest.raises(
        UserError,
        match="made with a VQGAN of 8192 codes and 1024 codes per face .32x32.; the model "
        "config has image_vocab_size 1024 and image_tokens 16",
    ):
        file_config = TrainConfig(**{**config.__dict__, "model": str(tmp_path / "tiny.json")})
        train(folder / "shards", tmp_path / "run2", file_config, progress=False)

    # generation and evaluation: the run's VQGAN encodes and decodes 32 x 32 codes (sampling 1,024 tokens is generic
    # and slow on a CPU: the generation tests cover it at 16 tokens)
    session = load_session(tmp_path / "run", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"])
    linears = [m for m in session.model.modules() if isinstance(m, Linear)]
    assert linears and all(m.weight.t().is_contiguous() for m in linears)  # laid out for decoding
    codes = session.encode_faces([folder / "raw" / SOME["ffhq/00001"][0]])
    assert len(codes[0]) == 1024 and session.decode_faces(codes)[0].shape == (256, 256, 3)
    prompt = session.layouts.to_image_prompt("a smiling man")
    assert len(prompt.tokens) + 1024 + 1 <= session.config.seq_length  # room for the image and its closing [SEP]
    with pytest.raises(UserError, match="not match the model: codebook of 1024 codes, the model has 8192 image tokens"):
        load_session(
            tmp_path / "run",
            vqgan_config=write_tiny_vqgan(tmp_path / "f16")["config"],
            vqgan_ckpt=tmp_path / "f16" / "last.ckpt",
        )
