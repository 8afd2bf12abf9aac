"""The engine: presets, models, the optimization loop, LoRA files, judging and refinement (no app code here)."""

import logging

# torchao (8-bit base weights) tries its CUDA/other-Python extensions at import and logs each miss; they are not
# ones this project uses. Its import also registers enums with torch's pytree, which warns once per enum, and
# diffusers looks for torchao tensor types of older releases (only for loading torchao-serialised checkpoints).
for name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(name).setLevel(logging.ERROR)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# We do not depend on torchvision (no CPU build here): transformers then uses its PIL image processors, which is what
# we want, and says so on every start; that line is ours to silence, not a problem for the user.
logging.getLogger("transformers.utils.import_utils").addFilter(_DropMessage("requires torchvision (not installed)"))
