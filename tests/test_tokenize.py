"""tokenize-images: image preparation, shard layout, determinism, resume after a kill, GPUs and nodes."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_fixture import FACES, GOOD, REJECT_REASONS, write_corpus, write_file
from PIL import Image

from common.errors import UserError
from converters.fixtures import write_image
from facetokens import shards
from facetokens.config import TokenizeConfig
from facetokens.images import BadImage, prepare_face, square_box, try_prepare_face
from facetokens.tokenize_images import faces_by_split, read_faces, shard_aligned_batches, tokenize_images
from facetokens.vqgan_files import load_vqgan
from samples.tiny_vqgan import write_tiny_vqgan

ROOT = Path(__file__).resolve().parents[1]
SHARD_SIZE = 4
RUN = {"gpus": 0, "batch_size": 4, "loader_workers": 1, "precision": "fp32", "shard_size": SHARD_SIZE}


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("name", [k for k, v in FACES.items() if v[1] not in ("junk", "missing", "truncated")])
def test_every_mode_and_size_becomes_256_rgb(tmp_path, name):
    file, mode, size, fmt, box = FACES[name]
    write_file(tmp_path / file, mode, size, fmt)
    if name in REJECT_REASONS:
        assert try_prepare_face(tmp_path / file, box)[1].reason == REJECT_REASONS[name]
        return
    array = prepare_face(tmp_path / file, box)
    assert array.shape == (256, 256, 3) and array.dtype == np.uint8
    assert array.std() > 1  # a picture, not a flat fill


def test_broken_files_are_rejects_with_reasons(tmp_path):
    for name, reason in REJECT_REASONS.items():
        file, mode, size, fmt, box = FACES[name]
        write_file(tmp_path / file, mode, size, fmt)
        array, reject = try_prepare_face(tmp_path / file, box)
        assert array is None and reject.reason == reason and str(tmp_path) in reject.detail or reason == "bad_box"
    with pytest.raises(BadImage):
        prepare_face(tmp_path / "nothing.png")


def test_box_crop_and_square_policy(tmp_path):
    left_red = np.zeros((200, 400, 3), np.uint8)
    left_red[:, :200] = (255, 0, 0)
    left_red[:, 200:] = (0, 0, 255)
    Image.fromarray(left_red).save(tmp_path / "halves.png")
    red = prepare_face(tmp_path / "halves.png", [20, 40, 180, 160])  # 160x120 box -> 160x160 square, all red
    assert (red[..., 0] > 250).all() and (red[..., 2] < 5).all()
    centre = prepare_face(tmp_path / "halves.png")  # no box: centre 200x200 square, half red half blue
    assert centre[:, :100, 0].mean() > 250 and centre[:, 156:, 2].mean() > 250
    assert square_box((0, 0, 178, 218), 178, 218) == (0, 20, 178, 198)  # CelebA: central 178x178
    assert square_box((10, 10, 50, 30), 400, 400) == (10, 0, 50, 40)  # grown around the centre, kept inside
    assert square_box((0, 0, 400, 100), 400, 300) == (50, 0, 350, 300)  # too wide: largest square that fits


def test_draft_decoding_matches_full_decoding(tmp_path):
    write_image(tmp_path / "big.jpg", (1024, 1024), fmt="JPEG")
    fast = prepare_face(tmp_path / "big.jpg").astype(int)
    with Image.open(tmp_path / "big.jpg") as image:
        slow = np.asarray(image.convert("RGB").resize((256, 256), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(fast - slow).mean() < 3


def test_sixteen_bit_grey_is_scaled_not_clipped_and_alpha_goes_on_white(tmp_path):
    write_file(tmp_path / "g16.png", "I;16", (64, 80), "PNG")
    grey = prepare_face(tmp_path / "g16.png")  # a 0..65535 ramp; rows 8-72 of 80 survive the square crop
    assert grey.min() < 30 and grey.max() > 225 and grey.std() > 50  # clipping would make it almost all 255
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (prepare_face(tmp_path / "clear.png") == 255).all()


# ----------------------------------------------------------------------------- shard helpers
def test_sample_keys_are_tar_safe_and_reversible():
    for image_id in ["celeba/000001", "expw/photo.1_0", "a~b c/ü.jpg", "x..y//z"]:
        key = shards.sample_key(image_id)
        assert "." not in key and "/" not in key and " " not in key
        assert shards.image_id_from_key(key) == image_id


def test_shard_reader_reads_what_tarfile_reads(tmp_path):
    """The reader's own ustar parsing gives tarfile's members, and tarfile's errors, on any tar or truncation."""
    import io
    import tarfile

    def members_and_error(read, path):
        out = []
        try:
            out.extend(read(path, path.read_bytes()) if read is shards._tar_members else read(path))
        except tarfile.ReadError as e:
            out.append(str(e))
        return out

    def by_tarfile(path):
        with tarfile.open(path) as tar:
            yield from ((m.name, tar.extractfile(m).read()) for m in tar)

    names = ["a.json", "a.codes.u16", "b" * 150 + ".json", "ü.json"]  # the long and non-ASCII names get pax headers
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        whole = tmp_path / f"{fmt}.tar"
        with tarfile.open(whole, "w", format=fmt) as tar:
            for name in names:
                tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
                info = tarfile.TarInfo(name + "x")
                info.size = 700
                tar.addfile(info, io.BytesIO(bytes(range(100)) * 7))
        data = whole.read_bytes()
        for cut in [*range(0, len(data), 97), len(data)]:
            part = tmp_path / "part.tar"
            part.write_bytes(data[:cut])
            assert members_and_error(shards._tar_members, part) == members_and_error(by_tarfile, part)
        for at in range(0, 4096, 61):  # a changed byte: a bad checksum in a header, or other data
            part.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
            assert members_and_error(shards._tar_members, part) == members_and_error(by_tarfile, part)
    assert len(members_and_error(shards._tar_members, whole)) == 2 * len(names)


def test_node_split_covers_every_shard_exactly_once():
    for n_shards in (0, 1, 7, 100):
        for nodes in (1, 2, 3, 8):
            covered = [k for rank in range(nodes) for k in shards.node_shards(n_shards, nodes, rank)]
            assert covered == list(range(n_shards))
    with pytest.raises(UserError):
        shards.node_shards(10, 2, 2)


def test_batches_never_cross_shards(setup):
    from facetokens.tokenize_images import make_task

    by_split = faces_by_split(read_faces(setup["corpus"]))
    units = shards.plan_units({s: len(f) for s, f in by_split.items()}, 5)
    assert units == [("train", 0), ("train", 1), ("train", 2), ("test", 0)]
    tasks = [make_task(k, units, by_split, 5) for k in range(4)]
    batches = shard_aligned_batches(tasks, 2)
    assert [len(b) for b in batches] == [2, 2, 1, 2, 2, 1, 1, 2]
    assert [i for batch in batches for i in batch] == list(range(13))
    assert [f.split for t in tasks for f in t.faces] == ["train"] * 11 + ["test"] * 2


# ----------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("tokenize")
    corpus = write_corpus(folder)
    vqgan = write_tiny_vqgan(folder / "vqgan", seed=1)
    baseline = folder / "baseline"
    summary = tokenize_images(
        corpus,
        baseline,
        vqgan_config=vqgan["config"],
        vqgan_ckpt=vqgan["ckpt"],
        config=TokenizeConfig(**RUN),
        progress=False,
    )
    return {"folder": folder, "corpus": corpus, "vqgan": vqgan, "baseline": baseline, "summary": summary}


def run(setup, out, **changes):
    return tokenize_images(
        setup["corpus"],
        out,
        vqgan_config=setup["vqgan"]["config"],
        vqgan_ckpt=setup["vqgan"]["ckpt"],
        config=TokenizeConfig(**{**RUN, **changes}),
        progress=False,
    )


def files(folder: Path) -> dict[str, bytes]:
    """The shards' files; each machine's run settings and lock (tokenize-config-node-R.json, .lock-node-R) are its
    own."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(("tokenize-config-", ".lock-"))
    }


def assert_identical(folder: Path, baseline: Path) -> None:
    got, want = files(folder), files(baseline)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name


def test_shards_hold_every_good_face_once_with_codes_and_texts(setup):
    import webdataset as wds

    summary, out = setup["summary"], setup["baseline"]
    assert summary["faces_written"] == GOOD and summary["shards_written"] == 4
    assert summary["faces_written_per_split"] == {"train": 7, "val": 0, "test": 2}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["test", "train", "val"]
    assert [Path(u).relative_to(out).as_posix() for u in shards.tar_urls(out)] == [
        "train/shard-000000.tar",
        "train/shard-000001.tar",
        "train/shard-000002.tar",
        "test/shard-000000.tar",
    ]
    assert shards.tar_urls(out, "val") == [] and len(shards.tar_urls(out / "train")) == 3
    assert summary["rejects"]["by_reason"] == {"bad_box": 1, "corrupt": 1, "missing": 1, "not_an_image": 1}
    urls = shards.tar_urls(out)
    samples = list(wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, empty_check=False))
    ids = [json.loads(s["json"])["image_id"] for s in samples]
    good = set(FACES) - set(REJECT_REASONS)
    test_faces = {"expw/photo.1_0", "fs2k/rgba_1"}  # the corpus fixture's test split
    assert ids == sorted(good - test_faces) + sorted(test_faces)
    assert {m["image_id"] for m, _ in shards.read_samples(out, "test")} == test_faces
    assert all(m["split"] == "train" for m, _ in shards.read_samples(out, "train"))
    for s in samples:
        meta = json.loads(s["json"])
        assert shards.image_id_from_key(s["__key__"]) == meta["image_id"]
        codes = np.frombuffer(s["codes.u16"], dtype="<u2")
        assert codes.shape == (256,) and codes.max() < 1024
        assert [t["kind"] for t in meta["texts"]] == ["attributes", "caption"]
        assert meta["texts"][0]["attributes"][0]["key"] == "gender" and "ünïcode" in meta["texts"][1]["text"]
    index = json.loads((out / "index.json").read_text())
    assert index["faces"] == GOOD and [s["faces"] for s in index["shards"]] == [3, 3, 1, 2]
    assert index["splits"] == {
        "train": {"faces": 7, "shards": 3},
        "val": {"faces": 0, "shards": 0},
        "test": {"faces": 2, "shards": 1},
    }
    assert {r["image_id"]: r["reason"] for r in index["rejects"]["items"]} == REJECT_REASONS


def test_codes_are_the_model_codes_of_the_prepared_face_normalised_once(setup):
    model = load_vqgan(setup["vqgan"]["config"], setup["vqgan"]["ckpt"], with_decoder=False)
    face = next(f for f in read_faces(setup["corpus"]) if f.image_id == "expw/photo.1_0")
    x = torch.from_numpy(prepare_face(face.path, face.box).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = model.encode_to_codes(x)[0].numpy()
    stored = {m["image_id"]: c for m, c in shards.read_samples(setup["baseline"])}["expw/photo.1_0"]
    assert (stored == expected).mean() > 0.99  # batch of 3 vs batch of 1: at most a near-tie may differ


def test_rerun_skips_finished_shards(setup):
    before = files(setup["baseline"])
    summary = run(setup, setup["baseline"])
    assert summary["shards_written"] == 0 and summary["shards_skipped_complete"] == 4
    assert files(setup["baseline"]) == before


def test_resume_after_kill_is_byte_identical(setup):
    out = setup["folder"] / "killed"
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from facetokens.config import TokenizeConfig; "
        f"from facetokens.tokenize_images import tokenize_images; "
        f"tokenize_images({str(setup['corpus'])!r}, {str(out)!r}, vqgan_config={str(setup['vqgan']['config'])!r}, "
        f"vqgan_ckpt={str(setup['vqgan']['ckpt'])!r}, config=TokenizeConfig(**{RUN!r}), progress=False)"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "train" / "shard-000000.stats.json").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = sum(
        shards.is_complete(out / s, k) for s, k in [("train", 0), ("train", 1), ("train", 2), ("test", 0)]
    )
    assert 1 <= done_before < 4, "the kill should land between the first and the last shard"
    summary = run(setup, out)
    assert summary["shards_skipped_complete"] == done_before
    assert_identical(out, setup["baseline"])


def test_interrupted_node_split_resumes_identically(setup, monkeypatch):
    out = setup["folder"] / "nodes"
    real_write = shards.write_shard
    calls = []

    def write_then_crash(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(real_write(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(shards, "write_shard", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(setup, out, num_nodes=2, node_rank=0)
    monkeypatch.setattr(shards, "write_shard", real_write)
    (out / "train" / ".shard-000001.tar.tmp-99999").write_bytes(b"half a shard")
    first = run(setup, out, num_nodes=2, node_rank=0)
    assert first["this_machine"] == [0, 2] and first["shards_written"] == 1 and first["index"] is None
    assert not (out / "index.json").exists()
    second = run(setup, out, num_nodes=2, node_rank=1)
    assert second["this_machine"] == [2, 4] and second["index"]
    assert_identical(out, setup["baseline"])


def test_two_cpu_workers_give_the_same_shards_as_one(setup):
    out = setup["folder"] / "two"
    summary = run(setup, out, gpus=2, loader_workers=0)  # decoding in the encoder processes: same bytes
    assert summary["devices"] == ["cpu", "cpu"] and summary["shards_written"] == 4
    assert_identical(out, setup["baseline"])


def test_bf16_reports_agreement_and_a_changed_plan_is_refused(setup):
    out = setup["folder"] / "bf16"
    summary = run(setup, out, precision="bf16", shard_range=(1, 2))
    agreement = summary["bf16_agreement"]
    assert agreement["faces"] == 3 and 0.5 < agreement["codes_equal"] <= 1.0
    with pytest.raises(UserError, match="precision"):
        run(setup, out, precision="fp32")
    with pytest.raises(UserError, match="shard_size"):
        run(setup, setup["baseline"], shard_size=5)


def test_user_errors(setup, tmp_path):
    with pytest.raises(UserError, match="images.parquet"):
        tokenize_images(
            tmp_path, tmp_path / "x", vqgan_config=None, vqgan_ckpt=setup["vqgan"]["ckpt"], config=TokenizeConfig(**RUN)
        )
    with pytest.raises(UserError, match="precision"):
        run(setup, tmp_path / "y", precision="fp8")
    with pytest.raises(UserError, match="shard-range"):
        run(setup, tmp_path / "z", shard_range=(0, 9))
