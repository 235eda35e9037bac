import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cli
from common.errors import UserError
from trainer.config import CONFIG_DIR, load_config
from trainer.model import Talk2Face, prefix_mask
from trainer.weights import UER_NAMES, export, load_model, read_weights

REPO = Path(__file__).resolve().parents[1]
TINY = load_config("tiny")


# ---------------------------------------------------------------------- the documented math, written out
def released_keys(c) -> dict[str, tuple[int, ...]]:
    """The key table of talk2face.md at the config's size."""
    h, f, v = c.hidden_size, c.feedforward_size, c.vocab_size
    keys = {
        "embedding.word.embedding.weight": (v, h),
        "embedding.pos.embedding.weight": (c.max_positions, h),
        "embedding.seg.embedding.weight": (3, h),
    }
    for i in range(c.layers):
        p = f"encoder.transformer.{i}."
        for j in range(3):
            keys |= {f"{p}self_attn.linear_layers.{j}.weight": (h, h), f"{p}self_attn.linear_layers.{j}.bias": (h,)}
        keys |= {
            f"{p}self_attn.final_linear.weight": (h, h),
            f"{p}self_attn.final_linear.bias": (h,),
            f"{p}feed_forward.linear_1.weight": (f, h),
            f"{p}feed_forward.linear_1.bias": (f,),
            f"{p}feed_forward.linear_2.weight": (h, f),
            f"{p}feed_forward.linear_2.bias": (h,),
        }
        for n in (1, 2):
            keys |= {f"{p}layer_norm_{n}.gamma": (h,), f"{p}layer_norm_{n}.beta": (h,)}
    return keys | {
        "encoder.layer_norm.gamma": (h,),
        "encoder.layer_norm.beta": (h,),
        "target.lm.output_layer.weight": (v, h),
    }


def random_state(c, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) * 0.05 for k, shape in released_keys(c).items()}
    for k in state:
        if k.endswith(".gamma"):
            state[k] += 1.0
    return state


def reference_logits(state, c, tokens, segments):
    """talk2face.md's math in float64 with plain ops: UER LayerNorm, additive -10000 prefix mask, pre-LN, tanh GELU."""
    s = {k: v.double() for k, v in state.items()}

    def ln(x, name):
        return (
            s[f"{name}.gamma"] * (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=True, keepdim=True) + 1e-6)
            + s[f"{name}.beta"]
        )

    def linear(x, name):
        return x @ s[f"{name}.weight"].T + s[f"{name}.bias"]

    def gelu_tanh(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    batch, length = tokens.shape
    h = (
        s["embedding.word.embedding.weight"][tokens]
        + s["embedding.pos.embedding.weight"][torch.arange(length)]
        + s["embedding.seg.embedding.weight"][segments]
    )
    allowed = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                allowed[b, i, j] = segments[b, j] != 0 and (segments[b, j] == 1 or j <= i)
    additive = (~allowed).double()[:, None] * -10000.0
    d = c.hidden_size // c.heads
    for i in range(c.layers):
        p = f"encoder.transformer.{i}."
        x = ln(h, p + "layer_norm_1")
        q, k, v = (
            linear(x, f"{p}self_attn.linear_layers.{j}").view(batch, length, c.heads, d).transpose(1, 2)
            for j in range(3)
        )
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + additive, dim=-1)
        attn = (probs @ v).transpose(1, 2).reshape(batch, length, -1)
        h = h + linear(attn, p + "self_attn.final_linear")
        x = ln(h, p + "layer_norm_2")
        h = h + linear(gelu_tanh(linear(x, p + "feed_forward.linear_1")), p + "feed_forward.linear_2")
    return ln(h, "encoder.layer_norm") @ s["target.lm.output_layer.weight"].T


def padded_batch():
    tokens = torch.tensor(
        [
            [101, 2000, 3746, 102, 2402, 102, 30522, 30600, 31000, 31545],
            [101, 2000, 14408, 3258, 102, 30523, 102, 2158, 0, 0],
        ]
    )
    segments = torch.tensor([[1, 1, 1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 2, 0, 0]])
    return tokens, segments


# ---------------------------------------------------------------------- loading the released format
@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    state = random_state(TINY)
    path = tmp_path_factory.mktemp("released") / "talk2face.bin"
    torch.save(state, path)
    return path, state


def test_released_keys_load_strictly_and_match_the_documented_math(released_file):
    path, state = released_file
    model = load_model(path, TINY).eval()
    tokens, segments = padded_batch()
    with torch.no_grad():
        ours = model(tokens, segments)
    expected = reference_logits(state, TINY, tokens, segments)
    assert torch.allclose(ours.double(), expected, atol=1e-5), (ours.double() - expected).abs().max()


def test_older_uer_names_load_too(tmp_path, released_file):
    _, state = released_file
    renamed = {({v: k for k, v in UER_NAMES.items()}).get(k, k): v for k, v in state.items()}
    assert "embedding.word_embedding.weight" in renamed and "target.output_layer.weight" in renamed
    torch.save(renamed, tmp_path / "uer.bin")
    _, found, _ = read_weights(tmp_path / "uer.bin")
    assert found == "uer"
    model = load_model(tmp_path / "uer.bin", TINY).eval()
    tokens, segments = padded_batch()
    with torch.no_grad():
        assert torch.allclose(
            model(tokens, segments).double(), reference_logits(state, TINY, tokens, segments), atol=1e-5
        )


def broken(state, change):
    state = dict(state)
    change(state)
    return state


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.update(
                {
                    "encoder.transformer.0.self_attn.final_linear.wieght": s.pop(
                        "encoder.transformer.0.self_attn.final_linear.weight"
                    )
                }
            ),
            (
                "missing 1: encoder.transformer.0.self_attn.final_linear.weight; "
                "unexpected 1: encoder.transformer.0.self_attn.final_linear.wieght"
            ),
        ),
        (lambda s: s.pop("encoder.layer_norm.beta"), "missing 1: encoder.layer_norm.beta"),
        (
            lambda s: s.update({"encoder.transformer.1.feed_forward.linear_1.bias": torch.zeros(7)}),
            "wrong shape 1: encoder.transformer.1.feed_forward.linear_1.bias [7] (expected [64])",
        ),
        (
            lambda s: s.update(
                {
                    "embedding.word.embedding.weight": torch.zeros(31500, 32),
                    "target.lm.output_layer.weight": torch.zeros(31500, 32),
                }
            ),
            "vocabulary of 31500 tokens, the config has 31546 (30522 text + 1024 image)",
        ),
        (
            lambda s: s.update({"embedding.pos.embedding.weight": torch.zeros(512, 32)}),
            "512 positions, the config has max_positions 64",
        ),
    ],
)
def test_mismatches_are_one_clear_error(tmp_path, released_file, change, message):
    torch.save(broken(released_file[1], change), tmp_path / "bad.bin")
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "bad.bin", TINY)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    (tmp_path / "notes.bin").write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        read_weights(tmp_path / "notes.bin")
    torch.save({"w": torch.zeros(1), "code": print}, tmp_path / "code.bin")  # a global: never unpickled
    with pytest.raises(UserError, match="refused to load: .*print"):
        read_weights(tmp_path / "code.bin")


def test_export_folder_round_trips_with_config_and_tokenizer_settings(tmp_path, released_file):
    model = load_model(released_file[0], TINY).eval()
    export(model, tmp_path / "export")
    back = load_model(tmp_path / "export").eval()
    assert back.config == TINY and json.loads((tmp_path / "export/config.json").read_text())["numbers"] == "digits"
    tokens, segments = padded_batch()
    with torch.no_grad():
        assert torch.equal(model(tokens, segments), back(tokens, segments))
    with pytest.raises(UserError, match="numbers 'digits' vs 'whole'"):
        load_model(tmp_path / "export", TINY.replace(numbers="whole"))
    assert (
        load_model(tmp_path / "export", TINY.replace(attention="flex")).config.attention == "flex"
    )  # a runtime choice


def test_fused_qkv_saves_and_loads_the_released_keys_exactly(tmp_path, released_file):
    _, state = released_file
    model = load_model(released_file[0], TINY)
    saved = model.state_dict()
    assert list(saved) == list(Talk2Face(TINY).state_dict()) and set(saved) == set(released_keys(TINY))
    assert list(saved)[3:9] == [
        f"encoder.transformer.0.self_attn.linear_layers.{j}.{kind}" for j in range(3) for kind in ("weight", "bias")
    ]
    assert all(torch.equal(saved[k], state[k]) for k in state)
    assert (
        saved["encoder.transformer.0.self_attn.linear_layers.1.weight"].untyped_storage().data_ptr()
        != model.encoder.transformer[0].self_attn.qkv.weight.untyped_storage().data_ptr()
    )  # copies, not views
    torch.save(saved, tmp_path / "again.bin")
    export(model, tmp_path / "export")
    for path in (tmp_path / "again.bin", tmp_path / "export"):
        assert all(torch.equal(load_model(path, TINY).state_dict()[k], state[k]) for k in state)
    qkv = model.encoder.transformer[1].self_attn.qkv
    assert torch.equal(
        qkv.weight[TINY.hidden_size : 2 * TINY.hidden_size],
        state["encoder.transformer.1.self_attn.linear_layers.1.weight"],
    )


def test_init_draws_the_released_parameters_in_the_released_order():
    model = Talk2Face(TINY)
    torch.manual_seed(3)
    model.init_weights()
    drawn = model.state_dict()  # keys in the released modules' order (Q, K, V before final_linear)
    torch.manual_seed(3)
    expected = {}
    for name, value in drawn.items():  # what the unfused model drew: one tensor after another in that order
        if not name.endswith((".gamma", ".beta")):
            expected[name] = torch.empty(value.shape).normal_(0.0, 0.02)
    assert all(torch.equal(drawn[k], v) for k, v in expected.items())


def test_layer_norm_equals_the_uer_formula():
    from trainer.model import LayerNorm

    torch.manual_seed(0)
    norm = LayerNorm(48, 1e-6)
    norm.gamma.data.normal_(1.0, 0.3)
    norm.beta.data.normal_(0.0, 0.3)
    x = torch.randn(5, 7, 48) * 4 + 2
    x[0, 0] = 3.0  # a constant row: zero std, eps alone keeps it finite
    uer = norm.gamma * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6) + norm.beta
    assert torch.allclose(norm(x), uer, atol=1e-6, rtol=1e-6)


def test_loss_at_labelled_positions_equals_the_full_loss_and_its_gradients():
    torch.manual_seed(2)
    model = Talk2Face(TINY).eval()
    tokens, segments = padded_batch()
    labels = torch.full_like(tokens, -100)
    labels[0, 5:9], labels[1, 6:7] = tokens[0, 6:10], tokens[1, 7:8]
    full = torch.nn.functional.cross_entropy(model(tokens, segments).flatten(0, 1), labels.flatten())
    full.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    ours = model.loss(tokens, segments, labels)
    ours.backward()
    assert torch.allclose(ours, full, atol=1e-6)
    assert all(torch.allclose(p.grad, expected[n], atol=1e-6) for n, p in model.named_parameters())
    summed = model.loss(tokens, segments, labels, reduction="sum")
    assert torch.allclose(summed, full * 5, atol=1e-5)


def test_evaluation_loss_in_chunks_gives_each_rows_sum(monkeypatch):
    torch.manual_seed(3)
    model = Talk2Face(TINY).eval()
    tokens, segments = padded_batch()
    labels = torch.full_like(tokens, -100)
    labels[0, 2:9], labels[1, 6:8] = tokens[0, 3:10], tokens[1, 7:9]
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(
            model(tokens, segments).transpose(1, 2), labels, ignore_index=-100, reduction="none"
        ).sum(1)
        monkeypatch.setattr("trainer.model.LOSS_CHUNK", 3)  # 9 labelled positions: chunks of 3, 3 and 3
        rows = model.loss(tokens, segments, labels, reduction="row")
        mean = model.loss(tokens, segments, labels)
    assert rows.shape == (2,) and torch.allclose(rows, full, atol=1e-5)
    assert torch.allclose(mean, full.sum() / 9, atol=1e-6)


# ---------------------------------------------------------------------- configs and size
def test_paper_preset_is_the_released_config_and_full_size_counts():
    released = load_config(REPO / "trainer/configs/released_base_config.json")
    assert released == load_config("paper") and released.numbers == "whole"
    assert (released.vocab_size, released.seq_length, released.image_tokens) == (31546, 334, 256)
    with torch.device("meta"):
        model = Talk2Face(released)
    state = model.state_dict()
    assert model.num_parameters() == 134_299_392 and len(state) == 198
    assert {k: tuple(v.shape) for k, v in state.items()} == released_keys(released)


def test_released_config_at_another_size(tmp_path):
    values = json.loads((CONFIG_DIR / "released_base_config.json").read_text())
    values |= {"layers_num": 2, "hidden_size": 64, "emb_size": 64, "heads_num": 4, "seq_length": 300}
    (tmp_path / "base_config.json").write_text(json.dumps(values))
    c = load_config(tmp_path / "base_config.json")
    assert (c.layers, c.hidden_size, c.heads, c.seq_length) == (2, 64, 4, 300)
    (tmp_path / "other.json").write_text(json.dumps(values | {"layernorm_positioning": "post"}))
    with pytest.raises(UserError, match="layernorm_positioning is 'post', expected 'pre'"):
        load_config(tmp_path / "other.json")


def test_init_is_normal_002_except_layer_norm():
    model = Talk2Face(TINY.replace(hidden_size=64, heads=4))
    word = model.embedding.word.embedding.weight
    assert abs(word.std().item() - 0.02) < 0.001
    assert abs(model.encoder.transformer[0].self_attn.final_linear.bias.std().item() - 0.02) < 0.01
    assert torch.equal(model.encoder.layer_norm.gamma, torch.ones(64))
    assert torch.equal(model.encoder.transformer[1].layer_norm_2.beta, torch.zeros(64))


def test_dropout_only_in_training():
    model = Talk2Face(TINY)
    tokens, segments = padded_batch()
    model.train()
    assert not torch.equal(model(tokens, segments), model(tokens, segments))
    model.eval()
    assert torch.equal(model(tokens, segments), model(tokens, segments))


def test_prefix_mask_by_hand():
    segments = torch.tensor([[1, 1, 2, 2, 0]])
    expected = torch.tensor(
        [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]], dtype=torch.bool
    )
    assert torch.equal(prefix_mask(segments)[0], expected)


def test_flex_attention_matches_sdpa_on_cpu():
    torch.manual_seed(0)
    sdpa = Talk2Face(TINY).eval()
    flex = Talk2Face(TINY.replace(attention="flex")).eval()
    flex.load_state_dict(sdpa.state_dict())
    tokens, segments = padded_batch()
    with torch.no_grad(), pytest.warns(UserWarning):
        assert torch.allclose(flex(tokens, segments), sdpa(tokens, segments), atol=1e-5)


# ---------------------------------------------------------------------- key-value cache
def greedy_uncached(model, prefix, steps):
    tokens = list(prefix)
    for _ in range(steps):
        segments = [1] * len(prefix) + [2] * (len(tokens) - len(prefix))
        logits = model(torch.tensor([tokens]), torch.tensor([segments]))
        tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prefix) :]


def greedy_cached(model, prefixes, steps):
    length = max(map(len, prefixes))
    tokens = torch.tensor([p + [0] * (length - len(p)) for p in prefixes])
    segments = torch.tensor([[1] * len(p) + [0] * (length - len(p)) for p in prefixes])
    cache = model.new_cache(len(prefixes), length + steps)
    logits = model(tokens, segments, cache=cache)
    last = logits[torch.arange(len(prefixes)), torch.tensor([len(p) - 1 for p in prefixes])]
    out = []
    for _ in range(steps):
        nxt = last.argmax(-1)
        out.append(nxt)
        last = model(nxt[:, None], torch.full((len(prefixes), 1), 2), cache=cache)[:, -1]
    return torch.stack(out, 1).tolist()


def test_cached_and_uncached_greedy_decoding_agree():
    torch.manual_seed(1)
    model = Talk2Face(TINY).eval()
    prefixes = [[101, 2000, 3746, 102, 2402, 2158, 102], [101, 2000, 14408, 3258, 102, 30600, 30601, 102], [101, 102]]
    with torch.no_grad():
        cached = greedy_cached(model, prefixes, 12)
        assert cached == [greedy_uncached(model, p, 12) for p in prefixes]


# ---------------------------------------------------------------------- command line
def test_inspect_model_prints_config_and_count(released_file):
    result = CliRunner().invoke(cli.main, ["inspect-model", "--checkpoint", str(released_file[0]), "--config", "tiny"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["parameters"] == Talk2Face(TINY).num_parameters() and report["key_format"].startswith("released")
    assert report["keys"] == "all 38 keys match" and report["tokenizer"] == {
        "vocab": "bert-base-uncased",
        "numbers": "digits",
    }


def test_inspect_model_mismatch_exits_2_with_one_line(tmp_path, released_file):
    torch.save(broken(released_file[1], lambda s: s.pop("encoder.layer_norm.beta")), tmp_path / "bad.bin")
    args = ["inspect-model", "--checkpoint", str(tmp_path / "bad.bin"), "--config", "tiny"]
    proc = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert proc.exit_code == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "missing 1: encoder.layer_norm.beta" in proc.stderr


def test_the_compiled_loss_keeps_its_graphs_whatever_the_count_of_labels():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    loss = torch.compile(Talk2Face(TINY).loss, backend=counter)  # the graph machinery of --compile, no codegen
    tokens = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    segments = torch.ones_like(tokens)
    segments[:, 6:] = 2
    graphs = []
    for labelled in range(2, 9):
        labels = torch.full_like(tokens, -100)
        labels[0, 12 - labelled :] = tokens[0, 12 - labelled :]
        loss(tokens, segments, labels).backward()
        graphs.append(counter.frame_count)
    assert graphs[2:] == [graphs[2]] * 5, graphs  # after the first dynamic recompile, none per new count


def test_loss_refuses_an_unknown_reduction():
    tokens, segments = padded_batch()
    with pytest.raises(ValueError, match="reduction 'none': expected mean, sum or row"):
        Talk2Face(TINY).loss(tokens, segments, torch.full_like(tokens, -100), reduction="none")
