"""The Talk2Face prefix-LM, exactly the released architecture (TencentPretrain `talk2face` config).

Module names follow the released `talk2face.bin`, so its state dict loads with no renaming:

    embedding.{word,pos,seg}.embedding.weight
    encoder.transformer.{i}.self_attn.linear_layers.{0,1,2}.{weight,bias}   Q, K, V (one fused `qkv` at run time)
    encoder.transformer.{i}.self_attn.final_linear.{weight,bias}
    encoder.transformer.{i}.feed_forward.linear_{1,2}.{weight,bias}
    encoder.transformer.{i}.layer_norm_{1,2}.{gamma,beta}
    encoder.layer_norm.{gamma,beta}
    target.lm.output_layer.weight                                           untied, no bias

Segments: 0 padding, 1 prompt and prefix (bidirectional), 2 target (causal). Token i attends to
token j iff j is not padding and (segment_j == 1 or j <= i). Positions run 0..L-1 over the row.

Incremental decoding: `cache = model.new_cache(batch, capacity)`, `model(prefix, segments, cache=cache)`
runs the right-padded segment-1 prefixes in one pass, then `model(next_tokens[:, None], twos, cache=cache)`
adds one target token per row and step; each row continues at its own position after its prefix.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from trainer.config import ModelConfig

log = logging.getLogger(__name__)

PAD_SEGMENT, PREFIX_SEGMENT, TARGET_SEGMENT = 0, 1, 2
IGNORE = -100  # label of positions without loss (torch's cross_entropy default ignore_index)
LOSS_CHUNK = 2048  # labelled positions per chunk of logits without gradients: [2048, 31,546] fp32 is 258 MB


class LayerNorm(nn.Module):
    """UER's LayerNorm: eps is added to the *unbiased* std, not to the variance (differs from nn.LayerNorm).

    gamma * (x - mean) / (std + eps) + beta in a few passes (`_uer_normalize`); when gradients are needed,
    `_UERLayerNorm` computes them in a few fused passes instead of autograd's dozen elementwise ops.
    """

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(size))
        self.beta = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.gamma.requires_grad or self.beta.requires_grad):
            return _UERLayerNorm.apply(x, self.gamma, self.beta, self.eps)
        normalized, _, _ = _uer_normalize(x, self.eps)
        return torch.addcmul(self.beta, normalized, self.gamma)


def _uer_normalize(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x - mean) / (std + eps) over the last dimension, with its 1 / (std + eps) and std ([..., 1] each).

    Two passes (the mean, then the norm of the deviations): torch's var/std/var_mean kernels on the CPU are
    ~60x slower than a sum or a norm of the same tensor.
    """
    centered = x - x.mean(-1, keepdim=True)
    std = torch.linalg.vector_norm(centered, dim=-1, keepdim=True) / math.sqrt(x.shape[-1] - 1)
    scale = (std + eps).reciprocal()
    return centered.mul_(scale), scale, std


class _UERLayerNorm(torch.autograd.Function):
    """y = gamma * xhat + beta, xhat = (x - mean) * r, r = 1 / (s + eps), s the unbiased std. With g = dy * gamma:

        dx = r * (g - mean(g)) - xhat * sum(g * xhat) / ((n - 1) * s)

    (the second term is the path through s; mean(g) and sum(g * xhat) are matrix-vector products with gamma).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        normalized, scale, std = _uer_normalize(x, eps)
        ctx.save_for_backward(normalized, gamma, scale, std)
        return torch.addcmul(beta, normalized, gamma)

    @staticmethod
    def backward(ctx, dy):
        normalized, gamma, scale, std = ctx.saved_tensors
        size = normalized.shape[-1]
        weighted = dy * normalized
        rows = tuple(range(dy.dim() - 1))
        dgamma, dbeta = weighted.sum(rows), dy.sum(rows)
        mean_g = (dy @ gamma).unsqueeze(-1) / size
        coefficient = (weighted @ gamma).unsqueeze(-1) / (std.clamp_min(torch.finfo(std.dtype).tiny) * (size - 1))
        dx = torch.addcmul(-mean_g, dy, gamma).mul_(scale).addcmul_(normalized, coefficient, value=-1)
        return dx, dgamma, dbeta, None


class TableEmbedding(nn.Module):
    """A wrapper so the weight is named `<name>.embedding.weight`, as in the released file."""

    def __init__(self, rows: int, size: int):
        super().__init__()
        self.embedding = nn.Embedding(rows, size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)


class Embedding(nn.Module):
    """word + position + segment, then dropout; no LayerNorm (`remove_embedding_layernorm`)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.word = TableEmbedding(config.vocab_size, config.hidden_size)
        self.pos = TableEmbedding(config.max_positions, config.hidden_size)
        self.seg = TableEmbedding(config.segments, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens, segments, positions):
        return self.dropout(self.word(tokens) + self.pos(positions) + self.seg(segments))


@dataclass
class KVCache:
    """Keys and values of every layer for incremental decoding, with the segments of the cached slots."""

    keys: list[torch.Tensor]  # per layer [batch, heads, capacity, head_dim]
    values: list[torch.Tensor]
    segments: torch.Tensor  # [batch, capacity], 0 for padding and unused slots
    next_position: torch.Tensor  # [batch] position id of each row's next token
    length: int = 0  # slots filled

    @property
    def capacity(self) -> int:
        return self.segments.shape[1]


class MultiHeadedAttention(nn.Module):
    """Q, K and V as one [3 x hidden, hidden] matrix multiply; saved and loaded under the released names.

    `qkv` holds the released `linear_layers.{0,1,2}` (Q, K, V) stacked by rows: state_dict() splits it
    back into those six keys and load_state_dict() stacks them, so files keep the released layout.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = config.heads, config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.final_linear = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout  # on the attention probabilities
        self.use_flex = config.attention == "flex"
        self.register_state_dict_post_hook(_split_qkv)
        self.register_load_state_dict_pre_hook(_stack_qkv)

    def released_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """(released name, view into `qkv`) in the released order: linear_layers.0.weight, .0.bias, .1.weight..."""
        weights, biases = self.qkv.weight.chunk(3), self.qkv.bias.chunk(3)
        return [
            pair
            for j in range(3)
            for pair in ((f"{QKV_NAME}.{j}.weight", weights[j]), (f"{QKV_NAME}.{j}.bias", biases[j]))
        ]

    def forward(self, x, mask, layer_cache=None):
        """mask: [batch, 1, queries, keys] bool (True = may attend), or a FlexAttention BlockMask."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if layer_cache is not None:
            k, v = layer_cache(k, v)
        dropout = self.dropout if self.training else 0.0
        if self.use_flex and layer_cache is None:
            out = flex_attention(q, k, v, block_mask=mask)  # no dropout on probabilities: FlexAttention has none
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # scale 1/sqrt(head_dim)
        return self.final_linear(out.transpose(1, 2).reshape(batch, length, -1))


QKV_NAME = "linear_layers"  # the released modules of Q, K and V


def _split_qkv(module: MultiHeadedAttention, state: dict, prefix: str, local_metadata) -> None:
    """state_dict() hook: `qkv.{weight,bias}` -> the released six keys, in the released key order."""
    keys = [k for k in state if k.startswith(prefix)]
    moved = {k: state.pop(k) for k in keys}
    for key, value in moved.items():
        if key == prefix + "qkv.weight":  # a copy each: files must not hold views of one storage
            state.update((prefix + name, t.detach().clone()) for name, t in module.released_tensors())
        elif key != prefix + "qkv.bias":
            state[key] = value


def _stack_qkv(
    module, state: dict, prefix: str, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    """load_state_dict() hook: the released six keys -> `qkv.{weight,bias}` (missing ones are left to strict)."""
    for kind in ("weight", "bias"):
        names = [f"{prefix}{QKV_NAME}.{j}.{kind}" for j in range(3)]
        if all(n in state for n in names):
            state[f"{prefix}qkv.{kind}"] = torch.cat([state.pop(n) for n in names])


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.hidden_size, config.feedforward_size)
        self.linear_2 = nn.Linear(config.feedforward_size, config.hidden_size)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))  # `gelu_fast`


class TransformerLayer(nn.Module):
    """Pre-LN: h = h + dropout(attn(ln1(h))); h = h + dropout(ffn(ln2(h)))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadedAttention(config)
        self.layer_norm_1 = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout_1 = nn.Dropout(config.dropout)
        self.feed_forward = FeedForward(config)
        self.layer_norm_2 = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout_2 = nn.Dropout(config.dropout)

    def forward(self, h, mask, layer_cache=None):
        h = h + self.dropout_1(self.self_attn(self.layer_norm_1(h), mask, layer_cache))
        return h + self.dropout_2(self.feed_forward(self.layer_norm_2(h)))


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.transformer = nn.ModuleList(TransformerLayer(config) for _ in range(config.layers))
        self.layer_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)


class LMTarget(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.output_layer = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class Target(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.lm = LMTarget(config)


class Talk2Face(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = Embedding(config)
        self.encoder = Encoder(config)
        self.target = Target(config)
        self.init_weights()
        if config.attention == "flex" and config.dropout > 0:
            log.info("FlexAttention applies no dropout to attention probabilities (the SDPA path does)")

    def init_weights(self) -> None:
        """N(0, 0.02) for every parameter but the LayerNorms' gamma and beta (biases included), as UER does.

        Nothing to draw for a model built on the meta device (weights to be loaded into it): drawing there goes
        through torch's Python reference kernels, about half a millisecond a tensor."""
        if self.target.lm.output_layer.weight.is_meta:
            return
        with torch.no_grad():
            for name, p in self.released_parameters():
                if not name.endswith((".gamma", ".beta")):
                    nn.init.normal_(p, mean=0.0, std=0.02)

    def column_major_weights(self) -> Talk2Face:
        """Lay every Linear weight out for decoding: [out, in] as ever, stored as its transpose ([in, out] contiguous).

        F.linear then hands the BLAS an untransposed right-hand matrix, which on the CPU takes the small-row
        kernels: a decode step's multiplies (10 rows) run ~1.6x faster. Inference sessions in fp32 on the CPU
        do this after loading (`trainer.inference.load_session`; other devices and precisions are unmeasured);
        training keeps the row-major layout, under which the backward pass's products run 5-13% faster on the
        same CPU. Files are written contiguous either way.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.weight.is_contiguous():
                weight = module.weight
                module.weight = nn.Parameter(weight.detach().t().contiguous().t(), requires_grad=weight.requires_grad)
        return self

    def released_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """(released name, tensor) in the released order; Q, K and V are views into the fused parameter."""
        pairs = []
        for name, p in self.named_parameters():
            module_name, _, leaf = name.rpartition(".")
            if leaf == "weight" and module_name.endswith(".qkv"):
                attention = self.get_submodule(module_name.rpartition(".")[0])
                pairs += [(f"{module_name[:-3]}{n}", t) for n, t in attention.released_tensors()]
            elif not (leaf == "bias" and module_name.endswith(".qkv")):
                pairs.append((name, p))
        return pairs

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits [batch, length, vocab] for tokens and segments [batch, length]."""
        return self.head(self.hidden(tokens, segments, cache))

    def head(self, hidden: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor:
        """Logits of hidden states [..., hidden]: the final LayerNorm, then the output layer's `columns` only."""
        return F.linear(self.encoder.layer_norm(hidden), self.target.lm.output_layer.weight[columns])

    def hidden(self, tokens: torch.Tensor, segments: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The last layer's output [batch, length, hidden], before the final LayerNorm and the output layer."""
        if cache is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
            mask = self.attention_mask(segments)
            layer_caches = [None] * len(self.encoder.transformer)
        else:
            positions, mask, layer_caches = self._cache_step(tokens, segments, cache)
        h = self.embedding(tokens, segments, positions)
        for layer, layer_cache in zip(self.encoder.transformer, layer_caches):
            h = layer(h, mask, layer_cache)
        return h

    def loss(
        self, tokens: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Cross-entropy over the labelled positions (label != IGNORE): the mean, the sum (reduction="sum"), or
        each row's sum [batch] (reduction="row").

        Equal to cross_entropy(model(tokens, segments), labels, ignore_index=IGNORE), but the final LayerNorm,
        the output layer and the softmax run only on the labelled positions: the [rows x length, vocab] logits
        of the whole batch (and their gradient) are never made. Without gradients, the labelled positions go
        through in chunks of LOSS_CHUNK, so evaluation holds one chunk's logits at a time.
        """
        if reduction not in ("mean", "sum", "row"):
            raise ValueError(f"reduction {reduction!r}: expected mean, sum or row")
        labelled = labels != IGNORE
        h, targets = self.hidden(tokens, segments)[labelled], labels[labelled]
        if torch.is_grad_enabled():  # one piece: a fixed graph for torch.compile, whatever the count of labels
            losses = F.cross_entropy(self.head(h).float(), targets, reduction="none")
        else:
            pieces = [
                F.cross_entropy(self.head(h[i : i + LOSS_CHUNK]).float(), targets[i : i + LOSS_CHUNK], reduction="none")
                for i in range(0, len(h), LOSS_CHUNK)
            ]
            losses = torch.cat(pieces) if pieces else h.new_zeros(0, dtype=torch.float32)
        if reduction == "row":  # scattered back to [batch, length], then summed per row (deterministic on CUDA)
            return (
                torch.zeros(labels.shape, dtype=losses.dtype, device=losses.device)
                .masked_scatter_(labelled, losses)
                .sum(1)
            )
        return losses.sum() if reduction == "sum" else losses.mean()

    def attention_mask(self, segments: torch.Tensor):
        if self.config.attention == "flex":
            return flex_block_mask(segments)
        return prefix_mask(segments)[:, None]

    # ------------------------------------------------------------------ incremental decoding
    def new_cache(self, batch: int, capacity: int, device=None, dtype=None) -> KVCache:
        device = device or self.target.lm.output_layer.weight.device
        dtype = dtype or self.target.lm.output_layer.weight.dtype
        # slots, not positions: rows with prefixes of different lengths leave padding slots between, so
        # the slot count may exceed max_positions while every row's positions stay within it (_cache_step)
        shape = (batch, self.config.heads, capacity, self.config.head_dim)
        layers = len(self.encoder.transformer)
        return KVCache(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)],
            segments=torch.zeros(batch, capacity, dtype=torch.long, device=device),
            next_position=torch.zeros(batch, dtype=torch.long, device=device),
        )

    def _cache_step(self, tokens, segments, cache: KVCache):
        """Positions, mask and per-layer writers for tokens appended to the cache's filled slots."""
        start, new = cache.length, tokens.shape[1]
        if start + new > cache.capacity:
            raise UserError(f"the key-value cache holds {cache.capacity} tokens; {start + new} requested")
        if start == 0:  # prefill: right-padded prefixes, positions 0.. as in an uncached row
            positions = torch.arange(new, device=tokens.device).expand_as(tokens)
            cache.next_position = (segments != PAD_SEGMENT).sum(1)
        else:  # each row continues after its own prefix, whatever padding the batch put between
            positions = cache.next_position[:, None] + torch.arange(new, device=tokens.device)
            cache.next_position += new
            # A row that already ended (its [SEP]) keeps stepping beside the others and may run past the last
            # position; its outputs are discarded, so it is held at the last position instead of indexing past it.
            positions = positions.clamp_(max=self.config.max_positions - 1)
        cache.segments[:, start : start + new] = segments
        cache.length = start + new
        keys = cache.segments[:, : cache.length]
        if start > 0 and new == 1:  # one token after all others: every filled slot but padding is visible
            mask = (keys != PAD_SEGMENT)[:, None, None]
        else:
            mask = prefix_mask(keys, query_slots=torch.arange(start, start + new, device=tokens.device))[:, None]

        def writer(index):
            def write(k, v):
                cache.keys[index][:, :, start : start + new] = k
                cache.values[index][:, :, start : start + new] = v
                return cache.keys[index][:, :, : start + new], cache.values[index][:, :, : start + new]

            return write

        return positions, mask, [writer(i) for i in range(len(self.encoder.transformer))]


def prefix_mask(segments: torch.Tensor, query_slots: torch.Tensor | None = None) -> torch.Tensor:
    """[batch, queries, keys] bool: query i may attend to key j iff seg_j != 0 and (seg_j == 1 or j <= i).

    `segments` are the keys' segments; queries are the same slots unless `query_slots` says which.
    """
    keys = torch.arange(segments.shape[1], device=segments.device)
    queries = keys if query_slots is None else query_slots
    causal = keys[None, :] <= queries[:, None]  # [queries, keys]
    seg = segments[:, None, :]
    return (seg != PAD_SEGMENT) & ((seg == PREFIX_SEGMENT) | causal[None])


# ---------------------------------------------------------------------- FlexAttention (CUDA)
_compiled_flex = None


def flex_attention(q, k, v, block_mask):
    """FlexAttention, compiled on CUDA (fused kernel); eager elsewhere (exact but materialises the scores)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention as flex

    if not q.is_cuda:
        return flex(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


def flex_block_mask(segments: torch.Tensor):
    """The prefix-LM mask as a FlexAttention BlockMask (blocks wholly masked are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, kv):
        seg = segments[b, kv]
        return (seg != PAD_SEGMENT) & ((seg == PREFIX_SEGMENT) | (kv <= q))

    batch, length = segments.shape
    return create_block_mask(mask_mod, batch, None, length, length, device=segments.device)
