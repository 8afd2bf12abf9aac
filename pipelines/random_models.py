"""Models built from configs written here, with random weights: no download.

Two uses:
- `tiny`: minute models that run the whole method on a CPU in seconds (tests, the offline app).
  Their images are noise; the code path is the real one.
- `full`: the published architectures at full size, for `pipelines.bench --random-weights` on a GPU.
  Time and memory do not depend on the weights' values.

Tokenizers are trained here on a few sentences (byte-level BPE), so nothing is fetched.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderDC,
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    Gemma2Config,
    Gemma2Model,
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    T5Config,
    T5EncoderModel,
)
from transformers.models.idefics2 import Idefics2ImageProcessorPil
from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]

# The chat layout Qwen2.5-VL ships with (system turn, vision markers around each image),
# reduced to what a single-image conversation needs. Real checkpoints bring their own template.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Is the horizon of the scene aligned with the red line? Answer with Yes or No.",
    "Do the colors of the image match the color palette shown at the bottom?",
    "Is Point A in the foreground and Point B in the background? Is Point A closer to the camera?",
    "a tropical beach, a desert at sunset, a cat on a windowsill, a city street at night",
    "Yes No yes no Score: 0 1 2 3 4 5 The image shows a photo of a painting.",
]


def tiny_tokenizer(special_tokens: list[str] | None = None, vocab_size: int = 512,
                   max_length: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences: every string encodes, 'Yes' is one token."""
    special = special_tokens or ["<pad>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,  # it writes to stdout
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=special[0], eos_token=special[1],
                                   model_max_length=max_length)


def in_eval_mode(pipe):
    """Models built from a config start in training mode (T5 has dropout): from_pretrained ones do not."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


# --------------------------------------------------------------------------- Flux
def flux_configs(size: str) -> dict:
    if size == "tiny":
        return dict(
            transformer=dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                             attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                             pooled_projection_dim=32, guidance_embeds=False, axes_dims_rope=(4, 6, 6)),
            vae=dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 16, 16),
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                     layers_per_block=1, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
                     scaling_factor=0.3611, shift_factor=0.1159),
            clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      projection_dim=32, max_position_embeddings=77),
            t5=dict(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, relative_attention_num_buckets=8),
        )
    if size == "full":
        return dict(
            transformer=dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                             attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                             pooled_projection_dim=768, guidance_embeds=False, axes_dims_rope=(16, 56, 56)),
            vae=dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                     layers_per_block=2, norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
                     scaling_factor=0.3611, shift_factor=0.1159),
            clip=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      projection_dim=768, max_position_embeddings=77, hidden_act="quick_gelu", vocab_size=49408),
            t5=dict(d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64, vocab_size=32128,
                    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32),
        )
    raise ValueError(f"unknown model size {size!r}: use 'tiny' or 'full'")


def build_flux(size: str = "tiny", guidance_embeds: bool = False, shift: float = 1.0,
               dynamic_shifting: bool = False) -> FluxPipeline:
    cfg = flux_configs(size)
    cfg["transformer"]["guidance_embeds"] = guidance_embeds
    tokenizer = tiny_tokenizer(max_length=77)  # CLIP's position table
    vocab = len(tokenizer)
    # Full-size builds keep the real vocabularies (their embedding tables cost real memory).
    clip = CLIPTextModel(CLIPTextConfig(**{"vocab_size": vocab, "pad_token_id": 0, "bos_token_id": 1,
                                           "eos_token_id": 1} | cfg["clip"]))
    t5 = T5EncoderModel(T5Config(**{"vocab_size": vocab, "pad_token_id": 0, "eos_token_id": 1} | cfg["t5"]))
    tokenizer_2 = tiny_tokenizer()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=dynamic_shifting,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096)
    pipe = FluxPipeline(
        scheduler=scheduler, vae=AutoencoderKL(**cfg["vae"]), text_encoder=clip, tokenizer=tokenizer,
        text_encoder_2=t5, tokenizer_2=tokenizer_2, transformer=FluxTransformer2DModel(**cfg["transformer"]),
    )
    return in_eval_mode(pipe)


# --------------------------------------------------------------------------- Sana
def sana_configs(size: str) -> dict:
    if size == "tiny":
        return dict(
            transformer=dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                             num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                             cross_attention_dim=16, caption_channels=32, sample_size=16, patch_size=1),
            vae=dict(in_channels=3, latent_channels=8, attention_head_dim=8,
                     encoder_block_types=("ResBlock",) * 4, decoder_block_types=("ResBlock",) * 4,
                     encoder_block_out_channels=(8, 8, 16, 16), decoder_block_out_channels=(8, 8, 16, 16),
                     encoder_layers_per_block=(1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                     encoder_qkv_multiscales=((),) * 4, decoder_qkv_multiscales=((),) * 4,
                     decoder_norm_types="rms_norm", scaling_factor=0.41407),
            text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8),
        )
    if size == "full":  # Sana 1600M 1024px, DC-AE f32c32, Gemma2-2B
        return dict(
            transformer=dict(in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32,
                             num_layers=20, num_cross_attention_heads=20, cross_attention_head_dim=112,
                             cross_attention_dim=2240, caption_channels=2304, sample_size=32, patch_size=1),
            vae=dict(in_channels=3, latent_channels=32, attention_head_dim=32,
                     encoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock",
                                          "EfficientViTBlock", "EfficientViTBlock"),
                     decoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock",
                                          "EfficientViTBlock", "EfficientViTBlock"),
                     encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                     decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                     encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
                     encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                     decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                     decoder_norm_types=("batch_norm", "batch_norm", "batch_norm", "rms_norm", "rms_norm",
                                         "rms_norm"),
                     decoder_act_fns=("relu", "relu", "relu", "silu", "silu", "silu"),
                     upsample_block_type="interpolate", downsample_block_type="Conv", scaling_factor=0.41407),
            text=dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                      num_key_value_heads=4, head_dim=256, vocab_size=256000),
        )
    raise ValueError(f"unknown model size {size!r}: use 'tiny' or 'full'")


def build_sana(size: str = "tiny", shift: float = 3.0) -> SanaPipeline:
    cfg = sana_configs(size)
    tokenizer = tiny_tokenizer()
    text_cfg = dict(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, bos_token_id=1) | cfg["text"]
    pipe = SanaPipeline(
        tokenizer=tokenizer, text_encoder=Gemma2Model(Gemma2Config(**text_cfg)),
        vae=AutoencoderDC(**cfg["vae"]), transformer=SanaTransformer2DModel(**cfg["transformer"]),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
    )
    return in_eval_mode(pipe)


# --------------------------------------------------------------------------- Qwen2.5-VL
def qwen_config(size: str, vocab_size: int, token_ids: dict[str, int],
                special: tuple[int, int] = (151643, 151645)) -> Qwen2_5_VLConfig:
    """`special` is (pad/bos, eos) in the tokenizer's ids."""
    if size == "tiny":
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                      fullatt_block_indexes=[1])
        rope = [2, 3, 3]
    elif size in ("full-3b", "full-7b"):
        big = size == "full-7b"
        text = dict(hidden_size=3584 if big else 2048, intermediate_size=18944 if big else 11008,
                    num_hidden_layers=28 if big else 36, num_attention_heads=28 if big else 16,
                    num_key_value_heads=4 if big else 2, tie_word_embeddings=not big)
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                      out_hidden_size=3584 if big else 2048, fullatt_block_indexes=[7, 15, 23, 31])
        rope = [16, 24, 24]
    else:
        raise ValueError(f"unknown Qwen2.5-VL size {size!r}: use 'tiny', 'full-3b' or 'full-7b'")
    text |= dict(vocab_size=vocab_size, bos_token_id=special[0], pad_token_id=special[0], eos_token_id=special[1],
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": rope})
    vision |= dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112, in_chans=3)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids)


def build_qwen_vl(size: str = "tiny") -> tuple[Qwen2_5_VLForConditionalGeneration, PreTrainedTokenizerFast,
                                               Qwen2VLImageProcessorPil]:
    tokenizer = tiny_tokenizer(QWEN_SPECIAL_TOKENS[:1] + QWEN_SPECIAL_TOKENS[2:3] + QWEN_SPECIAL_TOKENS[1:2]
                               + QWEN_SPECIAL_TOKENS[3:], max_length=32768)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    # Full-size builds keep the real vocabulary (its embedding table and lm_head cost real memory) but take the
    # special token ids from the tokenizer they come with: the model finds the image tokens by these ids.
    vocab = len(tokenizer) if size == "tiny" else 152064
    config = qwen_config(size, vocab, ids, (tokenizer.pad_token_id, tokenizer.eos_token_id))
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer, Qwen2VLImageProcessorPil()


# --------------------------------------------------------------------------- Idefics2
IDEFICS2_SPECIAL_TOKENS = ["<unk>", "<end_of_utterance>", "<image>", "<fake_token_around_image>"]

# Idefics2's conversation layout ("User:<image>...<end_of_utterance>\nAssistant:"), for the tiny build.
IDEFICS2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_idefics2(size: str = "tiny") -> tuple[Idefics2ForConditionalGeneration, PreTrainedTokenizerFast,
                                                 Idefics2ImageProcessorPil]:
    if size != "tiny":
        raise ValueError(f"random Idefics2 builds exist in the 'tiny' size only, not {size!r}")
    tokenizer = tiny_tokenizer(IDEFICS2_SPECIAL_TOKENS, max_length=32768)
    tokenizer.chat_template = IDEFICS2_CHAT_TEMPLATE
    config = Idefics2Config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=980, patch_size=14),
        perceiver_config=dict(hidden_size=64, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                              resampler_head_dim=8, num_key_value_heads=1),
        text_config=dict(model_type="mistral", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id),
    )
    model = Idefics2ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer, Idefics2ImageProcessorPil(do_image_splitting=False)




def seeded(seed: int = 0) -> torch.Generator:
    """Builders draw their random weights from torch's global RNG: seed it for reproducible tiny models."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
