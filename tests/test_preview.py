"""preview: reconstructions from the stored codes next to the original crop, its texts and the error."""

import json

import pytest
from corpus_fixture import FACES, write_corpus
from PIL import Image

from common.errors import UserError
from facetokens.config import TokenizeConfig
from facetokens.preview import preview, reconstruction_error
from facetokens.tokenize_images import tokenize_images
from samples.tiny_vqgan import write_tiny_vqgan

SOME = {k: FACES[k] for k in ("celeba/000001", "ffhq/00002", "fs2k/rgba_1", "missing/0001")}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preview")
    corpus = write_corpus(folder, SOME)
    vqgan = write_tiny_vqgan(folder / "vqgan", seed=2)
    tokenize_images(
        corpus,
        folder / "shards",
        vqgan_config=vqgan["config"],
        vqgan_ckpt=vqgan["ckpt"],
        config=TokenizeConfig(gpus=0, batch_size=4, loader_workers=0, shard_size=2),
        progress=False,
    )
    return folder, vqgan


def test_preview_writes_html_and_grid_with_errors_and_texts(tokenized):
    folder, vqgan = tokenized
    summary = preview(
        folder / "shards", folder / "out", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"], samples=3
    )
    assert summary["faces"] == 3 and summary["mean_psnr"] is not None
    page = (folder / "out" / "index.html").read_text()
    assert page.count("<tr>") == 4 and "PSNR" in page
    for image_id in ("celeba/000001", "ffhq/00002", "fs2k/rgba_1"):
        assert image_id in page
    assert "«ünïcode»" in page and "smiling: true" in page
    with Image.open(folder / "out" / "grid.png") as grid:
        assert grid.size == (4 * 2 * 256, 256)
    assert len(list((folder / "out" / "images").glob("*-orig.png"))) == 3


def test_preview_without_the_corpus_shows_reconstructions_only(tokenized, tmp_path):
    folder, vqgan = tokenized
    summary = preview(
        folder / "shards",
        tmp_path / "out",
        vqgan_config=vqgan["config"],
        vqgan_ckpt=vqgan["ckpt"],
        samples=1,
        corpus=tmp_path / "elsewhere",
    )
    assert summary["faces"] == 1 and summary["mean_psnr"] is None
    assert "original not found" in (tmp_path / "out" / "index.html").read_text()


def test_preview_needs_shards(tmp_path, tokenized):
    _, vqgan = tokenized
    with pytest.raises(UserError, match="no shard"):
        preview(tmp_path, tmp_path / "out", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"], samples=2)


def test_reconstruction_error():
    import numpy as np

    a = np.zeros((4, 4, 3), np.uint8)
    assert reconstruction_error(a, a + 10) == {"psnr": round(10 * np.log10(255**2 / 100), 2), "mae": 10.0}
    assert json.dumps(reconstruction_error(a, a + 1))


def test_a_second_preview_on_the_same_out_is_refused(tokenized, tmp_path):
    from common.locks import folder_lock

    folder, vqgan = tokenized
    with folder_lock(tmp_path / "out", "preview"), pytest.raises(UserError, match="another preview is writing there"):
        preview(folder / "shards", tmp_path / "out", vqgan_config=vqgan["config"], vqgan_ckpt=vqgan["ckpt"], samples=1)
    assert not (tmp_path / "out" / "index.html").exists()
