"""The CUDA paths, on the device (`pytest -m gpu`; benchmarks/gpu_proof.py runs them first). Skipped on the CPU.

Tolerances, stated once: the VQGAN's fp32 codes on CUDA (TF32 off) equal the CPU's for at least 99% of positions
(convolution algorithms sum in other orders, so a code whose two nearest entries are almost tied may flip); in bf16
the encoder's activations carry ~3 significant digits, so at least 90% of codes equal the fp32 CPU codes.
"""

import numpy as np
import pytest
import torch

from samples.tiny_vqgan import tiny_vqgan
from trainer.config import load_config
from trainer.generate import IMAGE, TEXT, Sampling, decode
from trainer.model import Talk2Face
from trainer.optim import OptimConfig, build_optimizer
from trainer.sequences import IGNORE, Layouts
from trainer.text import TextTokenizer
from trainer.train import LossModel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: run benchmarks/gpu_proof.py on one"),
]
FP32_AGREEMENT, BF16_AGREEMENT = 0.99, 0.90
TINY = load_config("tiny")


def faces(count: int = 4) -> torch.Tensor:
    """Smooth photo-like faces in [-1, 1] (random noise would put codes at near-ties everywhere)."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.uniform(-1, 1, (count, 3, 8, 8)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=256, mode="bicubic", align_corners=False).clamp(-1, 1)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.cpu() == b.cpu()).float().mean().item()


def test_vqgan_codes_on_cuda_agree_with_the_cpu_in_fp32_and_bf16():
    model, images = tiny_vqgan(), faces()
    on_cpu = model.encode_to_codes(images)
    cuda = model.cuda()
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        fp32 = cuda.encode_to_codes(images.cuda())
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    bf16 = cuda.encode_to_codes(images.cuda(), bf16=True)
    assert fp32.shape == bf16.shape == on_cpu.shape == (4, 256)
    assert agreement(fp32, on_cpu) >= FP32_AGREEMENT
    assert agreement(bf16, on_cpu) >= BF16_AGREEMENT


def test_a_bf16_training_step_on_cuda_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = Talk2Face(TINY).cuda().train()
    runner, optimizer = LossModel(model), build_optimizer(model, OptimConfig(lr=1e-3))
    assert optimizer.defaults.get("fused"), "AdamW must be the fused CUDA kernel"
    tokens = torch.randint(0, TINY.vocab_size, (8, TINY.seq_length), device="cuda")
    segments = torch.ones_like(tokens)
    segments[:, 20:] = 2
    labels = torch.full_like(tokens, IGNORE)
    labels[:, 19:-1] = tokens[:, 20:]
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = runner(tokens, segments, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_and_uncached_greedy_decoding_give_identical_tokens_on_cuda(dtype):
    torch.manual_seed(3)
    model = Talk2Face(TINY).cuda().to(dtype).eval()
    lay = Layouts(TINY, TextTokenizer.for_config(TINY))
    greedy = Sampling(greedy=True, batch_size=3)
    codes = torch.randint(0, 1024, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    for prompts, target in (
        ([lay.to_caption_prompt(codes)] * 2, TEXT),
        ([lay.to_image_prompt("this man has black hair."), lay.to_image_prompt("cacd age: 25")], IMAGE),
    ):
        cached = decode(model, prompts, target, lay.tok, greedy)
        uncached = decode(model, prompts, target, lay.tok, greedy, use_cache=False)
        assert cached == uncached


def test_fid_features_on_cuda_agree_with_the_cpu(tmp_path):
    """torch-fidelity's InceptionV3 (random weights in the real file format) on CUDA: pool features and logits
    agree with the CPU's to float tolerance (TF32 off), so FID/IS measured on a GPU are the CPU's figures."""
    from samples.random_inception import write_random_inception
    from trainer import fid

    weights = write_random_inception(tmp_path / "inception.pth")
    pictures = [np.asarray(((f.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).to(torch.uint8)) for f in faces(2)]
    on_cpu = fid.extract(fid.load_inception(weights), pictures)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        on_cuda = fid.extract(fid.load_inception(weights, "cuda"), pictures, device="cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert on_cuda.pool.shape == on_cpu.pool.shape == (2, 2048)
    torch.testing.assert_close(on_cuda.pool, on_cpu.pool, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(on_cuda.logits, on_cpu.logits, rtol=1e-3, atol=1e-3)
