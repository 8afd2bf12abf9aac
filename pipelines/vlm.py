"""Vision-language models as differentiable judges.

A VLM adapter turns a pixel tensor and (question, answer) pairs into a loss:
the cross-entropy of the answer tokens after the model's own chat template.
`score = exp(-loss)` is VQAScore's P(answer). The image preprocessing is written in torch
so gradients reach the pixels; it reproduces the model's HF image processor (see tests).

Each family (Qwen2.5-VL, Idefics2) supplies only two things: how pixels become model inputs,
and how a question becomes token ids around the image. Everything else is shared.
"""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from . import random_models

QA = tuple[str, str]


def fit_within(image: Image.Image, side: int) -> Image.Image:
    """`image` shrunk (aspect kept) so that neither side exceeds `side`; smaller images are returned as they are.
    The app shows the judge pictures at its generator's size: a toy judge trained on 112 px pictures writes noise
    about a 448 px one."""
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


def readable(text: str) -> bool:
    """Whether a VLM's reply reads as text: no control or replacement characters, and at least two words, four in
    five of them with a letter ("35mm" and "f/2.8" count; "--" does not). A VLM with random weights writes byte soup
    (broken UTF-8 and control bytes among the pieces); shown as a prompt or a reason it would pass garbage off as the
    model's answer."""
    if any(ch == "\ufffd" or unicodedata.category(ch)[0] == "C" for ch in text):
        return False
    words = text.split()
    return len(words) >= 2 and sum(any(c.isalpha() for c in w) for w in words) >= 0.8 * len(words)


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) in [0, 1] -> PIL RGB, rounding like any 8-bit image."""
    x = pixels.detach().float().reshape(-1, *pixels.shape[-3:])[0].clamp(0, 1)
    return Image.fromarray((x.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))


def from_pil(image: Image.Image) -> torch.Tensor:
    """PIL -> (1, 3, H, W) float in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def _round_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels in the forward pass; identity for the gradient (straight-through)."""
    return x + ((x * 255).round().clamp(0, 255) / 255 - x).detach()


def pil_like_resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (B, 3, H, W) in [0, 1] as PIL does on an 8-bit image: antialiased, width pass first,
    rounded to 8 bits after each pass. Within 2/255 of PIL, differentiable."""
    h, w = x.shape[-2:]
    th, tw = size
    if tw != w:
        x = _round_to_8bit(F.interpolate(x, size=(h, tw), mode=mode, align_corners=False, antialias=True))
    if th != h:
        x = _round_to_8bit(F.interpolate(x, size=(th, tw), mode=mode, align_corners=False, antialias=True))
    return x


class VLM(ABC):
    """A VLM as a differentiable judge: chat prompts, answer cross-entropy, scores and text generation.

    Args:
        model: the transformers model (frozen here), loaded by `loading.load_vlm`.
        tokenizer: its tokenizer, with the model's own chat template.
        image_processor: the model's PIL image processor (its sizes, mean and std are reproduced in torch).
        device: where the model runs.
    """

    ANSWER_PREFIX = ""  # what separates the generation prompt from the answer in this model's template

    def __init__(self, model, tokenizer, image_processor, device: str | torch.device = "cpu"):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = torch.device(device)

    # --- family-specific -----------------------------------------------------------------
    @abstractmethod
    def pixel_inputs(self, pixels: torch.Tensor) -> dict:
        """(1, 3, H, W) in [0, 1] -> the model's image keyword arguments, differentiable."""

    @abstractmethod
    def expand_image_tokens(self, text: str, image_inputs: dict) -> str:
        """Replace the template's single image marker by as many tokens as the image takes."""

    # --- shared ----------------------------------------------------------------------------
    def resize_and_normalise(self, pixels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
        """The processor's resize (when the size changes), rescale is implicit ([0, 1] in), then mean/std."""
        x = pil_like_resize(pixels, size, mode) if tuple(pixels.shape[-2:]) != size else pixels
        mean = torch.tensor(self.image_processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_processor.image_std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def chat_prompt(self, question: str, with_image: bool = True) -> str:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text` with no special tokens added (the chat template writes its own)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def tokens_after(self, before: str, text: str, before_ids: list[int] | None = None) -> list[int]:
        """Token ids of `text` as written right after `before`.

        Encoding both together, then dropping the tokens of `before`, respects how the tokenizer joins them
        (a sentencepiece "_Yes" after "Assistant:", a lone space token in Qwen's BPE).
        """
        before_ids = self.encode_text(before) if before_ids is None else before_ids
        joint = self.encode_text(before + text)
        if joint[:len(before_ids)] == before_ids and len(joint) > len(before_ids):
            return joint[len(before_ids):]
        return self.encode_text(text)

    def bos(self, text: str) -> list[int]:
        """[BOS] when the tokenizer has one and the template did not write it (as the HF processors do)."""
        tok = self.tokenizer
        if tok.bos_token_id is None or (tok.bos_token and text.startswith(tok.bos_token)):
            return []
        return [tok.bos_token_id]

    def prompt_text(self, question: str, image_inputs: dict | None) -> str:
        text = self.chat_prompt(question, with_image=image_inputs is not None)
        return text if image_inputs is None else self.expand_image_tokens(text, image_inputs)

    def prompt_ids(self, question: str, image_inputs: dict | None) -> list[int]:
        text = self.prompt_text(question, image_inputs)
        return self.bos(text) + self.encode_text(text)

    def encode_turn(self, question: str, image_inputs: dict | None, answer: str) -> tuple[list[int], list[int]]:
        """(prompt ids, ids of the assistant's `answer` as the model would write it after that prompt)."""
        text = self.prompt_text(question, image_inputs)
        body = self.encode_text(text)
        return self.bos(text) + body, self.tokens_after(text, self.ANSWER_PREFIX + answer, body)

    def forward(self, rows: list[tuple[dict | None, list[int]]]) -> torch.Tensor:
        """Logits (B, T, V) for a batch of token rows, each with its own image inputs (or None).

        Right padding keeps every row at the positions of an unpadded forward.
        """
        width = max(len(ids) for _, ids in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for _, r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for _, r in rows], device=self.device)
        images = [inputs for inputs, _ in rows]
        if any(i is None for i in images) and not all(i is None for i in images):
            raise ValueError("a batch mixes rows with and without an image")
        extra = {} if images[0] is None else self.batch_image_inputs(images, ids)
        return self.model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits.float()

    def nll_rows(self, items: list[tuple[torch.Tensor | None, str, str]]) -> torch.Tensor:
        """Mean answer-token NLL for each (pixels or None, question, answer), in one batched forward."""
        if not items:
            raise ValueError("no (question, answer) pairs given: the VLM needs at least one question")
        cache: dict[int, dict] = {}  # one preprocessing per distinct image tensor
        rows, spans = [], []
        for pixels, question, answer in items:
            if not question.strip() or not answer.strip():
                raise ValueError(f"empty question or answer in {(question, answer)!r}")
            inputs = None
            if pixels is not None:
                if id(pixels) not in cache:
                    cache[id(pixels)] = self.pixel_inputs(pixels.to(self.device, torch.float32)[:1])
                inputs = cache[id(pixels)]
            prompt, answer_ids = self.encode_turn(question, inputs, answer.strip())
            rows.append((inputs, prompt + answer_ids))
            spans.append((len(prompt), len(answer_ids)))
        logits = self.forward(rows)
        nll = []
        for row, (start, n) in enumerate(spans):
            # The token at position p is predicted by the logits at p - 1.
            pred = logits[row, start - 1:start - 1 + n]
            target = torch.tensor(rows[row][1][start:start + n], device=self.device)
            nll.append(F.cross_entropy(pred, target))
        return torch.stack(nll)

    def answer_nll(self, pixels: torch.Tensor, qa_pairs: list[QA]) -> torch.Tensor:
        """Mean negative log-likelihood of each answer about one image, shape (len(qa_pairs),)."""
        return self.nll_rows([(pixels, q, a) for q, a in qa_pairs])

    def next_token_logits(self, items: list[tuple[torch.Tensor | None, str, str]]) -> torch.Tensor:
        """Logits (B, V) of the token after each (pixels or None, question, assistant text so far); differentiable
        (the toy judge's score digits are trained through it), so callers that only read wrap it in no_grad."""
        rows = []
        for pixels, question, prefix in items:
            inputs = None if pixels is None else self.pixel_inputs(pixels.to(self.device, torch.float32)[:1])
            prompt, written = self.encode_turn(question, inputs, prefix)
            rows.append((inputs, prompt + written))
        logits = self.forward(rows)
        last = torch.tensor([len(r) - 1 for _, r in rows], device=self.device)
        return logits[torch.arange(len(rows), device=self.device), last]

    @abstractmethod
    def batch_image_inputs(self, per_row: list[dict], ids: torch.Tensor) -> dict:
        """Stack the image inputs of each row of a batch into the model's keyword arguments."""

    def loss(self, pixels: torch.Tensor, qa_pairs: list[QA]) -> torch.Tensor:
        """-log P(answers), averaged over the pairs: the quantity the optimization minimises."""
        return self.answer_nll(pixels, qa_pairs).mean()

    @staticmethod
    def probability(nll: torch.Tensor) -> float:
        """The score shown everywhere: the mean over pairs of P(answer) = exp(-answer NLL)."""
        return float(torch.exp(-nll.detach()).mean())

    @torch.no_grad()
    def score(self, pixels: torch.Tensor, qa_pairs: list[QA]) -> float:
        """Mean P(answer) over the pairs, each P = exp(-mean answer-token NLL) as in VQAScore."""
        return self.probability(self.answer_nll(pixels, qa_pairs))

    @torch.no_grad()
    def generate_text(self, prompt: str, image: Image.Image | None = None, max_new_tokens: int = 128,
                      temperature: float = 0.0, top_p: float = 1.0, num_return_sequences: int = 1,
                      seed: int | None = None) -> list[str]:
        """Chat completion for one user turn, with an optional image. Greedy when temperature is 0."""
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        image_inputs = None if image is None else self.pixel_inputs(from_pil(image).to(self.device))
        ids = torch.tensor([self.prompt_ids(prompt, image_inputs)], device=self.device)
        extra = {} if image_inputs is None else self.batch_image_inputs([image_inputs], ids)
        if seed is not None:
            torch.manual_seed(seed)
        sampling = temperature > 0
        out = self.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
            do_sample=sampling, temperature=temperature if sampling else None, top_p=top_p if sampling else None,
            num_return_sequences=num_return_sequences, pad_token_id=self.tokenizer.pad_token_id, **extra)
        return [s.strip() for s in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]

    def to(self, device: str | torch.device) -> VLM:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self


class QwenVL(VLM):
    """Qwen2-VL / Qwen2.5-VL: 14 px patches, 2x2 merge, two identical frames per still image."""

    IMAGE_TOKEN = "<|image_pad|>"

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        ip = self.image_processor
        factor = ip.patch_size * ip.merge_size
        return smart_resize(height, width, factor, min_pixels=ip.size["shortest_edge"],
                            max_pixels=ip.size["longest_edge"])

    def pixel_inputs(self, pixels: torch.Tensor) -> dict:
        ip = self.image_processor
        c, th, tw = pixels.shape[1], *self.target_size(*pixels.shape[-2:])
        x = self.resize_and_normalise(pixels, (th, tw), "bicubic")
        ps, m, tp = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        gh, gw = th // ps, tw // ps
        frames = x.expand(tp, c, th, tw)  # a still image is repeated over the temporal patch
        patches = frames.reshape(1, tp, c, gh // m, m, ps, gw // m, m, ps)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gh * gw, c * tp * ps * ps)
        grid = torch.tensor([[1, gh, gw]], device=x.device)
        return {"pixel_values": patches.to(self.dtype), "image_grid_thw": grid}

    def expand_image_tokens(self, text: str, image_inputs: dict) -> str:
        n = int(image_inputs["image_grid_thw"].prod()) // self.image_processor.merge_size ** 2
        return text.replace(self.IMAGE_TOKEN, self.IMAGE_TOKEN * n, 1)

    def batch_image_inputs(self, per_row: list[dict], ids: torch.Tensor) -> dict:
        image_id = self.tokenizer.convert_tokens_to_ids(self.IMAGE_TOKEN)
        return {
            "pixel_values": torch.cat([i["pixel_values"] for i in per_row]),
            "image_grid_thw": torch.cat([i["image_grid_thw"] for i in per_row]),
            # Without this, transformers 5 silently falls back to 1-D positions for the image.
            "mm_token_type_ids": (ids == image_id).long(),
        }


class Idefics2(VLM):
    """Idefics2: one image resized to fit 378..980 px, mean/std 0.5, a fixed number of image tokens."""

    IMAGE_TOKEN = "<image>"
    FAKE_TOKEN = "<fake_token_around_image>"
    ANSWER_PREFIX = " "  # the template ends in "Assistant:"; the model's answer starts with a space

    def __init__(self, model, tokenizer, image_processor, device: str | torch.device = "cpu"):
        # One view of the image: the differentiable path does not split it into crops.
        image_processor.do_image_splitting = False
        super().__init__(model, tokenizer, image_processor, device)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The processor's rule: shrink the long side to `longest_edge`, then lift each side to `shortest_edge`."""
        size = self.image_processor.size
        shortest, longest = size["shortest_edge"], size["longest_edge"]
        if width >= height and width > longest:
            height, width = int(longest / (width / height)), longest
        elif height > width and height > longest:
            height, width = longest, int(longest * (width / height))
        return max(height, shortest), max(width, shortest)

    def pixel_inputs(self, pixels: torch.Tensor) -> dict:
        th, tw = self.target_size(*pixels.shape[-2:])
        x = self.resize_and_normalise(pixels, (th, tw), "bilinear")[:, None]  # (batch, images, 3, H, W)
        return {"pixel_values": x.to(self.dtype),
                "pixel_attention_mask": torch.ones(1, 1, th, tw, dtype=torch.bool, device=x.device)}

    def expand_image_tokens(self, text: str, image_inputs: dict) -> str:
        n = self.model.config.perceiver_config.resampler_n_latents
        block = self.FAKE_TOKEN + self.IMAGE_TOKEN * n + self.FAKE_TOKEN
        return text.replace(self.IMAGE_TOKEN, block, 1)

    def batch_image_inputs(self, per_row: list[dict], ids: torch.Tensor) -> dict:
        # Images of different sizes are padded to the largest, the mask marking the real pixels.
        h = max(i["pixel_values"].shape[-2] for i in per_row)
        w = max(i["pixel_values"].shape[-1] for i in per_row)
        values, masks = [], []
        for i in per_row:
            ph, pw = h - i["pixel_values"].shape[-2], w - i["pixel_values"].shape[-1]
            values.append(F.pad(i["pixel_values"], (0, pw, 0, ph)))
            masks.append(F.pad(i["pixel_attention_mask"], (0, pw, 0, ph)))
        return {"pixel_values": torch.cat(values), "pixel_attention_mask": torch.cat(masks)}


@dataclass(frozen=True)
class Family:
    """Everything that depends on a VLM family, in one record."""

    adapter: type[VLM]  # our adapter around the model
    model_class: str  # the transformers class `from_pretrained` loads
    processor_class: str  # its PIL image processor (no torchvision needed)
    random: Callable[[str], tuple]  # (model, tokenizer, image processor) from configs with random weights


FAMILIES: dict[str, Family] = {
    "qwen2_5_vl": Family(QwenVL, "Qwen2_5_VLForConditionalGeneration", "Qwen2VLImageProcessorPil",
                         random_models.build_qwen_vl),
    "idefics2": Family(Idefics2, "Idefics2ForConditionalGeneration", "Idefics2ImageProcessorPil",
                       random_models.build_idefics2),
}


def family(name: str) -> Family:
    """A VLM family's record; an unknown name is an error naming it."""
    if name not in FAMILIES:
        raise ValueError(f"unknown VLM family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]

