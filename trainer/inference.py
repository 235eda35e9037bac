"""What generation and evaluation load: the model from any checkpoint we accept, its tokenizer, the VQGAN.

    session = load_session("runs/r1")                                    # a train RUN folder: checkpoints/latest
    session = load_session("talk2face.bin", vqgan_config=yaml, vqgan_ckpt=ckpt)   # the released state dict
    codes = session.encode_faces(["face.jpg"])                             # read exactly as tokenize-images does
    session.save_faces(codes, [Path("out/0.png")])

`--checkpoint` accepts a released-format state dict (`talk2face.bin`, released or older UER names), a
`.safetensors` file, an export folder (`model.safetensors` + `config.json`), or a RUN folder of `train`
(`RUN/checkpoints/latest` names the newest `step-NNNNNNN/`; without it the highest step is used).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from trainer import checkpoint
from trainer.config import ModelConfig, load_config
from trainer.model import Talk2Face
from trainer.sequences import Layouts
from trainer.text import VOCABS, TextTokenizer
from trainer.weights import WEIGHTS_FILE, load_model

log = logging.getLogger(__name__)

RELEASED_PREFIX_CUT = 64  # the released script cuts the whole to-image prefix row at 64 tokens
FACE_BATCH = 16  # faces read and encoded (or decoded) together
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_checkpoint(path: Path | str) -> Path:
    """The weights to load for `path`: a file or export folder as is; a RUN folder's latest checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found")
    if not path.is_dir() or (path / WEIGHTS_FILE).is_file():
        return path
    if not (path / checkpoint.CHECKPOINTS).is_dir():
        raise UserError(
            f"{path}: a folder with neither {WEIGHTS_FILE} (an export) nor {checkpoint.CHECKPOINTS}/ (a train run)"
        )
    found = checkpoint.latest(path)
    if found is None or not (found / WEIGHTS_FILE).is_file():
        where = f"{found.name} holds no {WEIGHTS_FILE}" if found else "no step-*/ checkpoint yet"
        raise UserError(f"{path / checkpoint.CHECKPOINTS}: {where}")
    return found


def is_released_file(path: Path) -> bool:
    """A plain state dict (talk2face.bin): the released weights' layout rules apply to it."""
    return path.is_file() and path.suffix != ".safetensors"


def check_vocab(vocab: Path | str | None) -> None:
    """`--vocab`: a shipped vocabulary name or a file identical to one; the message says what does not match."""
    if vocab is None or str(vocab) in VOCABS:
        return
    path = Path(vocab)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"--vocab {path}: cannot read ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    for shipped in VOCABS.values():
        if hashlib.sha256(shipped.read_bytes()).hexdigest() == digest:
            return
    lines = len(data.decode("utf-8", errors="replace").splitlines())
    sizes = ", ".join(f"{name} has {len(p.read_text(encoding='utf-8').splitlines())}" for name, p in VOCABS.items())
    raise UserError(
        f"--vocab {path}: {lines} tokens and not the shipped BERT uncased vocabulary ({sizes}); "
        "the model's text ids only mean something with the vocabulary it was trained with"
    )


def check_device(device: str | None) -> torch.device | None:
    """`--device` as a torch device this machine has, or one UserError line saying why not (None: not given)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device!r}: not a device name; expected cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no CUDA device visible"
        raise UserError(f"--device {device}: this torch ({torch.__version__}) has {build}; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 ..)")
    return dev


def pick_device(device: str | None) -> torch.device:
    if device:
        return check_device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Session:
    model: Talk2Face
    config: ModelConfig
    tokenizer: TextTokenizer
    layouts: Layouts
    device: torch.device
    checkpoint: Path
    released: bool  # a plain state dict: the released to-image prefix cut applies
    vqgan: object | None = None

    @property
    def prefix_cut(self) -> int | None:
        return RELEASED_PREFIX_CUT if self.released else None

    def need_vqgan(self, why: str):
        if self.vqgan is None:
            raise UserError(f"{why} needs the VQGAN: pass --vqgan-ckpt (and --vqgan-config for a taming last.ckpt)")
        return self.vqgan

    def encode_faces(self, paths: list[str | Path]) -> list[list[int]]:
        """Each face read, cropped and resized as tokenize-images does, normalised once to [-1, 1], encoded."""
        from facetokens.images import SIZE, BadImage, prepare_face
        from facetokens.vqgan import encode_batch

        vqgan = self.need_vqgan("reading a face")
        codes: list[list[int]] = []
        for start in range(0, len(paths), FACE_BATCH):
            arrays = []
            for path in paths[start : start + FACE_BATCH]:
                try:
                    arrays.append(prepare_face(path, None, SIZE))
                except BadImage as e:
                    raise UserError(f"cannot read the face {path} ({e.reason}: {e.detail})") from None
            images = torch.from_numpy(np.stack(arrays))
            codes += encode_batch(vqgan, images, str(self.device), bf16=False).cpu().tolist()
        return codes

    def decode_faces(self, codes: list[list[int]]) -> list[np.ndarray]:
        """VQGAN codes -> (256, 256, 3) uint8 RGB images."""
        vqgan = self.need_vqgan("writing faces")
        images = []
        for start in range(0, len(codes), FACE_BATCH):
            batch = torch.tensor(codes[start : start + FACE_BATCH], device=self.device)
            decoded = vqgan.decode_codes(batch).float().permute(0, 2, 3, 1).cpu().numpy()
            images.extend((decoded * 255).round().astype(np.uint8))
        return images


def load_session(
    checkpoint: Path | str,
    config: str | Path | None = None,
    vocab: Path | str | None = None,
    vqgan_config: Path | None = None,
    vqgan_ckpt: Path | None = None,
    device: str | None = None,
    dtype: str = "fp32",
) -> Session:
    """Load everything strictly; each mismatch is one UserError naming what does not match."""
    path = resolve_checkpoint(checkpoint)
    check_vocab(vocab)
    given = load_config(config) if config else None
    if dtype not in DTYPES:
        raise UserError(f"--precision {dtype!r}: expected one of {', '.join(DTYPES)}")
    dev = pick_device(device)
    model = load_model(path, given, device=dev).to(DTYPES[dtype]).eval()
    if dev.type == "cpu" and dtype == "fp32":  # where the layout was measured (docs/performance.md)
        model.column_major_weights()
    model.requires_grad_(False)
    tokenizer = TextTokenizer.for_config(model.config)
    session = Session(
        model, model.config, tokenizer, Layouts(model.config, tokenizer), dev, path, is_released_file(path)
    )
    if vqgan_ckpt is not None:
        session.vqgan = load_checked_vqgan(vqgan_config, vqgan_ckpt, model.config).to(dev)
    log.info("loaded %s (%s parameters) on %s", path, f"{model.num_parameters():,}", dev)
    return session


def load_checked_vqgan(vqgan_config: Path | None, vqgan_ckpt: Path, config: ModelConfig):
    from facetokens.vqgan_files import load_vqgan

    vqgan = load_vqgan(vqgan_config, vqgan_ckpt, with_decoder=True)
    problems = []
    if vqgan.config.n_embed != config.image_vocab_size:
        problems.append(
            f"codebook of {vqgan.config.n_embed} codes, the model has {config.image_vocab_size} image tokens"
        )
    if vqgan.config.codes_per_image != config.image_tokens:
        problems.append(f"{vqgan.config.codes_per_image} codes per face, the model expects {config.image_tokens}")
    if problems:
        raise UserError(f"{vqgan_ckpt}: VQGAN does not match the model: {'; '.join(problems)}")
    return vqgan
