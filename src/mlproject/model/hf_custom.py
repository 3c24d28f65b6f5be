"""Export as transformers custom code: the suite's own model source, config class and weights.

For a model no built-in transformers class holds exactly (`model.export_plan`), the export
folder gets the readable source of our GPT (`model/gpt.py` and what it imports) next to a
`PretrainedConfig` and a `PreTrainedModel` wrapper (`model/remote_code/`), each file copied
with its `mlproject.` imports rewritten to relative ones, so the folder needs torch and
transformers but not this package. config.json names the two classes in `auto_map`:
`AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` loads it offline and
computes our logits with our code. Written only on the user's explicit `--allow-custom-code`:
loading such a folder runs the code in it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any

import torch

from mlproject.errors import MlprojectError

# module -> its file in the export folder: flat names, since transformers loads a folder's
# modules as one package (and `mlproject.config` and `mlproject.model.config` would clash)
_PACKAGE = __name__.split(".")[0]  # the suite's package, whose modules are shipped
SHIPPED: dict[str, str] = {f"{_PACKAGE}.{module}": file for module, file in {
    "errors": "mlproject_errors.py",
    "config": "mlproject_config.py",
    "cpuinfo": "mlproject_cpuinfo.py",
    "model.config": "mlproject_gpt_config.py",
    "model.linear": "mlproject_linear.py",
    "model.loss": "mlproject_loss.py",
    "model.gpt": "mlproject_gpt.py",
    "model.remote_code.configuration_mlproject_gpt": "configuration_mlproject_gpt.py",
    "model.remote_code.modeling_mlproject_gpt": "modeling_mlproject_gpt.py",
}.items()}
CONFIG_CLASS, MODEL_CLASS = "MlprojectGPTConfig", "MlprojectGPTForCausalLM"
AUTO_MAP = {"AutoConfig": f"configuration_mlproject_gpt.{CONFIG_CLASS}",
            "AutoModelForCausalLM": f"modeling_mlproject_gpt.{MODEL_CLASS}"}
_FROM_IMPORT = re.compile(r"^(\s*)from (mlproject(?:\.\w+)*) import ", re.M)


def _imports_of_mlproject(source: str) -> list[str]:
    """The absolute `mlproject` imports left in `source` (what transformers would need installed)."""
    left = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            left += [a.name for a in node.names if a.name.split(".")[0] == "mlproject"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "mlproject":
            left.append(node.module or "")
    return left


def shipped_source(module: str) -> str:
    """The source of `module` with each `from mlproject.X import` made `from .<its file> import`."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MlprojectError(f"export-hf: cannot find the source of {module} to ship")

    def relative(match: re.Match[str]) -> str:
        target = match.group(2)
        if target not in SHIPPED:
            raise MlprojectError(f"export-hf: {module} imports {target}, which a custom-code export does not ship")
        return f"{match.group(1)}from .{SHIPPED[target].removesuffix('.py')} import "

    text = _FROM_IMPORT.sub(relative, Path(spec.origin).read_text(encoding="utf-8"))
    if left := _imports_of_mlproject(text):  # e.g. `import mlproject.x`: the folder would need the package
        raise MlprojectError(f"export-hf: {module} still imports {', '.join(left)} after the rewrite; "
                             "expected only `from mlproject.<module> import` lines")
    return f"# Written by mlproject export-hf from {module}; its mlproject imports are made relative.\n{text}"


def _hf_config(model: torch.nn.Module, eot_id: int | None, pad_id: int | None) -> Any:
    from mlproject.model.remote_code.configuration_mlproject_gpt import MlprojectGPTConfig

    cfg = model.config
    return MlprojectGPTConfig(gpt=dataclasses.asdict(cfg), auto_map=AUTO_MAP, architectures=[MODEL_CLASS],
                              bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=pad_id,
                              tie_word_embeddings=cfg.tie_embeddings, use_cache=False)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The wrapper's tensors (`model.` + our names), float32 on the CPU; a tied head stored once."""
    state = {f"model.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        del state["model.lm_head.weight"]  # the wrapper ties it to wte again when loaded
    return state


def write_custom(model: torch.nn.Module, folder: Path, *, eot_id: int | None, pad_id: int | None) -> None:
    """Write the source files, config.json (with `auto_map`) and model.safetensors into `folder`."""
    from safetensors.torch import save_file

    for module, name in SHIPPED.items():
        (folder / name).write_text(shipped_source(module), encoding="utf-8")
    _hf_config(model, eot_id, pad_id).save_pretrained(folder)
    save_file(_weights(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
