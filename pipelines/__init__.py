"""The engine: presets, models, the optimization loop, LoRA files, judging and refinement (no app code here)."""

import logging

# torchao (8-bit base weights) tries its CUDA/other-Python extensions at import and logs each miss; they are not
# ones this project uses. Its import also registers enums with torch's pytree, which warns once per enum, and
# diffusers looks for torchao tensor types of older releases (only for loading torchao-serialised checkpoints).
for name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(name).setLevel(logging.ERROR)
