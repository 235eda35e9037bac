"""Generation: decoding with and without the cache, constraints, sampling filters, and every mode through the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import cli
from common.errors import UserError
from trainer.config import CONFIG_DIR, load_config
from trainer.generate import IMAGE, TEXT, Sampling, decode, filter_logits
from trainer.inference import resolve_checkpoint
from trainer.model import Talk2Face
from trainer.sequences import Layouts
from trainer.text import TextTokenizer
from trainer.weights import UER_NAMES, export

TINY = load_config("tiny")
# the tiny model at the VQGAN's grid: 256 image tokens, so the tiny VQGAN's codes fit it
TINY256 = TINY.replace(image_tokens=256, seq_length=330, max_positions=340)


def run_cli(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False)


def layouts(config=TINY):
    return Layouts(config, TextTokenizer.for_config(config))


def random_codes(n, seed):
    return torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# ---------------------------------------------------------------------- decoding
@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(3)
    return Talk2Face(TINY).eval()


def prompts_of_every_kind(lay):
    return [
        lay.to_caption_prompt(random_codes(16, 1)),
        lay.to_attributes_prompt(random_codes(16, 2), "gender"),
        lay.to_attributes_prompt(random_codes(16, 3), "age", dataset="cacd"),
        lay.to_caption_prompt(random_codes(16, 4)),
    ]


def test_cached_and_uncached_greedy_decoding_give_identical_tokens(tiny_model):
    lay = layouts()
    greedy = Sampling(greedy=True, batch_size=3)
    text = prompts_of_every_kind(lay)
    image = [lay.to_image_prompt("this man has black hair."), lay.to_image_prompt("cacd age: 25")]
    for prompts, target in ((text, TEXT), (image, IMAGE)):
        cached = decode(tiny_model, prompts, target, lay.tok, greedy)
        uncached = decode(tiny_model, prompts, target, lay.tok, greedy, use_cache=False)
        assert cached == uncached
    assert all(len(r["tokens"]) == 16 for r in cached)


def test_a_cached_step_computes_the_full_forward_logits_over_the_allowed_span(tiny_model):
    from trainer.generate import _Cached, allowed_ids

    lay = layouts()
    prompt = lay.to_image_prompt("this man has black hair.")
    tokens, segments = torch.tensor([prompt.tokens]), torch.tensor([prompt.segments])
    allowed = allowed_ids(tiny_model, IMAGE, lay.tok)
    with torch.no_grad():
        step = _Cached(tiny_model, tokens, segments, torch.tensor([len(prompt.tokens)]), 2, allowed)
        first = step.first.clone()
        second = step.next(torch.tensor([TINY.text_vocab_size + 5]))
        row = torch.cat([tokens, torch.tensor([[TINY.text_vocab_size + 5]])], 1)
        full = tiny_model(row, torch.cat([segments, torch.tensor([[2]])], 1))
    for ours, expected in ((first, full[:, -2]), (second, full[:, -1])):
        assert torch.allclose(ours[:, allowed], expected[:, allowed], atol=1e-5)
        assert bool((ours[:, : TINY.text_vocab_size] == float("-inf")).all())


def rigged(favourite: int, second: int | None = None) -> Talk2Face:
    """A model whose logits are the same at every position: `favourite` highest, then `second`, then the rest."""
    model = Talk2Face(TINY).eval()
    with torch.no_grad():
        model.encoder.layer_norm.gamma.zero_()
        model.encoder.layer_norm.beta.fill_(1.0)  # every hidden state is all ones
        weight = model.target.lm.output_layer.weight
        weight.zero_()
        weight[favourite] = 1.0
        if second is not None:
            weight[second] = 0.5
    return model


def test_an_image_target_is_exactly_the_image_tokens_even_when_text_is_likelier():
    lay = layouts()
    model = rigged(favourite=2158)  # "man"
    for sampling in (Sampling(greedy=True), Sampling(samples=1, seed=1)):
        [out] = decode(model, [lay.to_image_prompt("a face")], IMAGE, lay.tok, sampling)
        assert len(out["tokens"]) == TINY.image_tokens
        assert all(TINY.text_vocab_size <= t < TINY.vocab_size for t in out["tokens"])


def test_a_text_target_never_holds_image_tokens_and_stops_at_sep():
    lay = layouts()
    prompt = lay.to_caption_prompt(random_codes(16, 0))
    [out] = decode(
        rigged(favourite=TINY.text_vocab_size + 5, second=lay.tok.sep_id),
        [prompt],
        TEXT,
        lay.tok,
        Sampling(greedy=True),
    )
    assert out == {"tokens": [], "stopped": True}
    [out] = decode(rigged(favourite=TINY.text_vocab_size + 5), [prompt], TEXT, lay.tok, Sampling(samples=1, top_k=5))
    assert out["tokens"] and all(0 < t < TINY.text_vocab_size and t != lay.tok.cls_id for t in out["tokens"])


def test_colons_and_semicolons_do_not_stop_text_only_sep_does():
    lay = layouts()
    prompt = lay.to_attributes_prompt(random_codes(16, 0), "gender")
    [out] = decode(rigged(favourite=1024), [prompt], TEXT, lay.tok, Sampling(greedy=True))  # ":" every step
    assert not out["stopped"] and out["tokens"] == [1024] * (TINY.seq_length - len(prompt.tokens))
    [out] = decode(rigged(favourite=1025), [prompt], TEXT, lay.tok, Sampling(greedy=True), stop_ids=(102, 1025))
    assert out == {"tokens": [], "stopped": True}  # evaluation's own stop list


def test_top_k_keeps_ties_and_top_p_keeps_the_crossing_token():
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.0]])
    kept = filter_logits(logits, top_k=2).isfinite()[0].tolist()
    assert kept == [True, True, True, True, False, False]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert filter_logits(probs, top_p=0.7).isfinite()[0].tolist() == [True, True, False, False]
    assert filter_logits(probs, top_p=0.0).isfinite().all()  # 0 = off


def test_sampling_is_reproducible_with_a_seed(tiny_model):
    lay = layouts()
    prompts = [lay.to_caption_prompt(random_codes(16, 9))] * 4

    def run(seed):
        return decode(tiny_model, prompts, TEXT, lay.tok, Sampling(seed=seed), torch.Generator().manual_seed(seed))

    assert run(5) == run(5) and run(5) != run(6)


def test_bad_sampling_flags_are_one_error():
    with pytest.raises(UserError, match="--samples 0.*--top-p 2"):
        Sampling(samples=0, top_p=2)


# ---------------------------------------------------------------------- end to end through the CLI
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from samples.tiny_vqgan import write_tiny_vqgan

    root = tmp_path_factory.mktemp("generate")
    vq = write_tiny_vqgan(root / "vqgan")
    torch.manual_seed(7)
    model = Talk2Face(TINY256).eval()
    export(model, root / "export")
    state = model.state_dict()
    torch.save(state, root / "talk2face.bin")
    torch.save({({v: k for k, v in UER_NAMES.items()}).get(k, k): v for k, v in state.items()}, root / "uer.bin")
    released = json.loads((CONFIG_DIR / "released_base_config.json").read_text())
    released |= {
        "layers_num": 2,
        "hidden_size": 32,
        "emb_size": 32,
        "heads_num": 4,
        "feedforward_size": 64,
        "max_seq_length": 340,
        "seq_length": 330,
    }
    (root / "base_config.json").write_text(json.dumps(released))
    face = (np.random.default_rng(0).random((300, 240, 3)) * 255).astype(np.uint8)
    Image.fromarray(face).save(root / "face.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"root": root, "config": vq["config"], "ckpt": vq["ckpt"], "face": root / "face.png"}


def vqgan_args(files):
    return ["--vqgan-config", files["config"], "--vqgan-ckpt", files["ckpt"]]


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_to_image_writes_the_samples_as_png_and_their_tokens(files, tmp_path):
    result = run_cli(
        "generate",
        "--checkpoint",
        files["root"] / "export",
        *vqgan_args(files),
        "--prompt",
        "to_image",
        "--text",
        "This man has black hair. smiling: true",
        "--samples",
        3,
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    [line] = read_results(tmp_path / "out")
    assert line["prompt"] == "to_image" and line["text"].startswith("This man") and len(line["samples"]) == 3
    for s in line["samples"]:
        assert len(s["tokens"]) == 256 and min(s["tokens"]) >= TINY256.text_vocab_size
        with Image.open(tmp_path / "out" / s["image"]) as image:
            assert image.size == (256, 256)
    assert line["prompt_tokens"][:4] == [101, 2000, 3746, 102]


def test_to_caption_and_to_attributes_with_candidates(files, tmp_path):
    base = ["generate", "--checkpoint", files["root"] / "export", *vqgan_args(files), "--image", files["face"]]
    result = run_cli(*base, "--prompt", "to_caption", "--samples", 2, "--out", tmp_path / "cap")
    assert result.exit_code == 0, result.output
    [line] = read_results(tmp_path / "cap")
    assert len(line["samples"]) == 2 and all("##" not in s["text"] for s in line["samples"])
    assert all(max(s["tokens"], default=0) < TINY256.text_vocab_size for s in line["samples"])
    result = run_cli(
        *base,
        "--prompt",
        "to_attributes",
        "--attribute",
        "gender",
        "--candidates",
        "male,female",
        "--out",
        tmp_path / "attr",
    )
    assert result.exit_code == 0, result.output
    [line] = read_results(tmp_path / "attr")
    assert len(line["samples"]) == 1 and "value" in line["samples"][0]  # greedy, one sample
    assert set(line["candidates"]) == {"male", "female"} and line["best_candidate"] in ("male", "female")
    assert line["best_candidate"] == max(line["candidates"], key=line["candidates"].get)
    assert line["prompt_tokens"][-2:] == [5907, 1024]  # `gender :` opens segment 2


def test_requests_file_batches_every_mode(files, tmp_path):
    lines = [
        {"prompt": "to_image", "text": "a smiling woman", "id": "a"},
        {"prompt": "to_caption", "image": str(files["face"])},
        {"prompt": "to_attributes", "image": str(files["face"]), "attribute": "age", "dataset": "cacd"},
    ]
    (tmp_path / "req.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = run_cli(
        "generate",
        "--checkpoint",
        files["root"] / "export",
        *vqgan_args(files),
        "--requests",
        tmp_path / "req.jsonl",
        "--samples",
        2,
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    got = read_results(tmp_path / "out")
    assert [r["prompt"] for r in got] == ["to_image", "to_caption", "to_attributes"] and got[0]["id"] == "a"
    assert [len(r["samples"]) for r in got] == [2, 2, 1]


@pytest.mark.parametrize("name", ["talk2face.bin", "uer.bin"])
def test_released_state_dict_with_released_config_generates_greedy_like_our_export(files, tmp_path, name):
    """New and old key names load strictly; the same weights give the same greedy tokens (digits vs whole aside)."""
    root = files["root"]
    outs = {}
    for label, args in (
        ("released", ["--checkpoint", root / name, "--config", root / "base_config.json"]),
        ("export", ["--checkpoint", root / "export"]),
    ):
        result = run_cli(
            "generate",
            *args,
            *vqgan_args(files),
            "--image",
            files["face"],
            "--prompt",
            "to_caption",
            "--greedy",
            "--out",
            tmp_path / label,
        )
        assert result.exit_code == 0, result.output
        outs[label] = read_results(tmp_path / label)[0]["samples"][0]["tokens"]
    assert outs["released"] == outs["export"]


def test_released_prefix_is_cut_at_64_tokens_as_the_released_script_does(files, tmp_path):
    long_text = " ".join(["this person has black hair and a big smile"] * 10)
    for label, checkpoint in (("released", files["root"] / "talk2face.bin"), ("ours", files["root"] / "export")):
        extra = ["--config", files["root"] / "base_config.json"] if label == "released" else []
        result = run_cli(
            "generate",
            "--checkpoint",
            checkpoint,
            *extra,
            *vqgan_args(files),
            "--prompt",
            "to_image",
            "--text",
            long_text,
            "--greedy",
            "--out",
            tmp_path / label,
        )
        assert result.exit_code == 0, result.output
    released, ours = read_results(tmp_path / "released")[0], read_results(tmp_path / "ours")[0]
    assert len(released["prompt_tokens"]) == 64 and released["prompt_truncated"]
    # ours fills the prefix up to seq_length - 256 image tokens - their closing [SEP], as training lays rows out
    assert len(ours["prompt_tokens"]) == TINY256.seq_length - 256 - 1 and ours["prompt_tokens"][-1] == 102


def test_run_folder_resolves_latest_or_highest_step(files, tmp_path):
    run = tmp_path / "run"
    for step in (10, 200):
        export(Talk2Face(TINY), run / "checkpoints" / f"step-{step:07d}")
    assert resolve_checkpoint(run) == run / "checkpoints" / "step-0000200"
    (run / "checkpoints" / "latest").write_text("step-0000010\n")
    assert resolve_checkpoint(run) == run / "checkpoints" / "step-0000010"
    with pytest.raises(UserError, match="neither model.safetensors"):
        resolve_checkpoint(tmp_path)


def one_line_error(result, message):
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_user_errors_are_one_line(files, tmp_path):
    root = files["root"]
    base = ["generate", "--out", tmp_path / "o", "--prompt", "to_caption", "--image"]
    one_line_error(
        run_cli(*base, root / "broken.jpg", "--checkpoint", root / "export", *vqgan_args(files)), "cannot read the face"
    )
    one_line_error(
        run_cli(*base, root / "nothing.png", "--checkpoint", root / "export", *vqgan_args(files)),
        "cannot read the face",
    )
    one_line_error(
        run_cli(*base, files["face"], "--checkpoint", root / "talk2face.bin", "--config", "tiny"),
        "340 positions, the config has max_positions 64",
    )
    export(Talk2Face(TINY), tmp_path / "tiny16")
    one_line_error(
        run_cli(*base, files["face"], "--checkpoint", tmp_path / "tiny16", *vqgan_args(files)),
        "256 codes per face, the model expects 16",
    )
    (tmp_path / "vocab.txt").write_text("[PAD]\nhello\n")
    one_line_error(
        run_cli(*base, files["face"], "--checkpoint", root / "export", "--vocab", tmp_path / "vocab.txt"),
        "2 tokens and not the shipped BERT uncased vocabulary",
    )
    one_line_error(run_cli(*base[:-1], "--checkpoint", root / "export"), "to_caption needs --image")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "to_image"}\n{"prompt": "to_image", "text": 5}\n')
    one_line_error(
        run_cli(
            "generate", "--checkpoint", root / "export", "--requests", tmp_path / "bad.jsonl", "--out", tmp_path / "o"
        ),
        "bad.jsonl:1: to_image needs --text",
    )


def test_mixed_prompt_lengths_decode_when_positions_equal_seq_length():
    config = TINY.replace(max_positions=TINY.seq_length)  # as the demo and paper-sized configs without spare positions
    torch.manual_seed(5)
    model = Talk2Face(config).eval()
    lay = Layouts(config, TextTokenizer.for_config(config))
    prompts = prompts_of_every_kind(lay)
    greedy = Sampling(greedy=True)
    assert decode(model, prompts, TEXT, lay.tok, greedy) == decode(
        model, prompts, TEXT, lay.tok, greedy, use_cache=False
    )


def test_candidate_score_ends_the_value_at_semicolon_or_sep(tiny_model):
    from trainer.generate import score, value_ends

    lay = layouts()
    prompt = lay.to_attributes_prompt(random_codes(16, 7), "gender", dataset="celeba")
    value, (sep, semicolon) = lay.tok.encode("female"), value_ends(lay.tok)
    ended = score(tiny_model, [prompt], [value], lay.tok, (sep, semicolon))[0]
    by_sep, by_semicolon = score(tiny_model, [prompt] * 2, [value + [sep], value + [semicolon]], lay.tok)
    assert ended == pytest.approx(float(np.logaddexp(by_sep, by_semicolon)), abs=1e-4)


def test_candidate_scores_equal_the_full_logits_log_likelihood(tiny_model):
    from trainer.generate import allowed_ids, score, value_ends

    lay = layouts()
    prompts = [
        lay.to_attributes_prompt(random_codes(16, 8), "gender", dataset="celeba"),
        lay.to_attributes_prompt(random_codes(16, 9), "age", dataset="cacd"),
    ]
    values = [lay.tok.encode("female"), lay.tok.encode("forty two")]
    ends = value_ends(lay.tok)
    ours = score(tiny_model, prompts, values, lay.tok, ends)
    blocked = ~allowed_ids(tiny_model, TEXT, lay.tok)
    for prompt, value, mine in zip(prompts, values, ours):
        row = torch.tensor([prompt.tokens + value])
        segments = torch.tensor([prompt.segments + [2] * len(value)])
        with torch.no_grad():
            logp = tiny_model(row, segments)[0].masked_fill(blocked, float("-inf")).log_softmax(-1)
        first = len(prompt.tokens) - 1
        expected = sum(float(logp[first + k, t]) for k, t in enumerate(value))
        expected += float(logp[first + len(value), list(ends)].logsumexp(0))
        assert mine == pytest.approx(expected, abs=1e-4)


def test_the_decoding_layout_changes_no_value_and_no_token(tiny_model):
    import copy

    laid_out = copy.deepcopy(tiny_model).column_major_weights()
    weight = laid_out.encoder.transformer[0].feed_forward.linear_1.weight
    assert weight.shape == tiny_model.encoder.transformer[0].feed_forward.linear_1.weight.shape
    assert weight.t().is_contiguous() and not weight.is_contiguous()
    mine, theirs = laid_out.state_dict(), tiny_model.state_dict()
    assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    lay = layouts()
    greedy = Sampling(greedy=True, batch_size=3)
    prompts = [lay.to_image_prompt("this man has black hair."), lay.to_image_prompt("cacd age: 25")]
    assert decode(laid_out, prompts, IMAGE, lay.tok, greedy) == decode(tiny_model, prompts, IMAGE, lay.tok, greedy)
    text = prompts_of_every_kind(lay)
    assert decode(laid_out, text, TEXT, lay.tok, greedy) == decode(tiny_model, text, TEXT, lay.tok, greedy)


def test_a_candidate_holding_an_id_a_text_target_never_holds_scores_minus_infinity(tiny_model):
    from trainer.generate import score

    lay = layouts()
    prompt = lay.to_attributes_prompt(random_codes(16, 10), "gender", dataset="celeba")
    female = lay.tok.encode("female")
    pad, image = [lay.tok.pad_id], [TINY.text_vocab_size + 5]
    scores = score(tiny_model, [prompt] * 3, [female, female + pad, image + female], lay.tok)
    assert scores[0] > float("-inf") and scores[1:] == [float("-inf")] * 2


def test_a_second_generate_on_the_same_out_is_refused(files, tmp_path):
    from common.locks import folder_lock

    with folder_lock(tmp_path / "out", "generate"):  # a first run is writing there
        result = run_cli(
            "generate", "--checkpoint", files["root"] / "export", "--prompt", "to_caption", "--image", files["face"],
            *vqgan_args(files), "--out", tmp_path / "out",
        )  # fmt: skip
    one_line_error(result, f"{tmp_path / 'out'}: another generate is writing there")
    assert not (tmp_path / "out" / "results.jsonl").exists()
