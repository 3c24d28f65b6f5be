"""Export as custom code: a model no built-in transformers class holds (the README's flagship
GPT-3 with biases and banded layers) is written, on `--allow-custom-code` only, as the suite's
own model source with a config class and `auto_map`; a fresh process without this package
loads it with `trust_remote_code=True` and computes our logits. `train` says up front which
export a run will get."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mlproject.cli import main
from mlproject.data.tokenizer import save_tokenizer, train_tokenizer
from mlproject.errors import MlprojectError
from mlproject.inference.generate import generate
from mlproject.model.checkpoint import save_model_checkpoint
from mlproject.model.config import GPTConfig
from mlproject.model.export_plan import CUSTOM_KIND, export_plan
from mlproject.model.gpt import GPT
from mlproject.model.hf_export import export_hf
from mlproject.outdir import MARKER

ROOT = Path(__file__).resolve().parents[2]
FLAGSHIP = ROOT / "configs" / "train" / "gpt3_research_small_offline.yaml"
TEXTS = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
         "import os\nprint(os.getcwd())\n"] * 30
TINY = dict(n_layer=3, n_head=2, d_model=32, block_size=32, attention_window=8, vocab_size=384)

# Run in a fresh interpreter where `mlproject` cannot be imported: the folder must stand alone.
LOADER = """
import importlib.abc, json, sys
class NoMlproject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "mlproject":
            raise ImportError(f"{name} imported by the exported code")
sys.meta_path.insert(0, NoMlproject())
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, inputs, outputs = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, local_files_only=True).eval()
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
data = torch.load(inputs, weights_only=True)
prompt = torch.tensor([tok("def add(a, b):")["input_ids"]])
with torch.no_grad():
    logits = model(data["idx"]).logits
    greedy = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None,
                            pad_token_id=tok.pad_token_id)[0, prompt.size(1):]
torch.save({"logits": logits, "greedy": greedy, "prompt": prompt[0]}, outputs)
print(json.dumps({"class": type(model).__name__,
                  "mlproject_modules": [m for m in sys.modules if m.split(".")[0] == "mlproject"]}))
"""


@pytest.fixture(scope="module", autouse=True)
def modules_cache(tmp_path_factory):
    """transformers copies a folder's code into its modules cache before importing it: a temporary
    one here, not the user's home (it reads $HF_MODULES_CACHE only when imported, hence the patch)."""
    from transformers import dynamic_module_utils

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        yield


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    return save_tokenizer(train_tokenizer(TEXTS, 320), tmp_path_factory.mktemp("tok") / "tokenizer.json")


def flagship_config(**overrides) -> GPTConfig:
    """The model section of the README's flagship config, shrunk so the test takes seconds."""
    section = yaml.safe_load(FLAGSHIP.read_text())["model"]
    return GPTConfig(**{**section, "preset": None, **TINY, **overrides}).resolved()


def trained_like(cfg: GPTConfig) -> GPT:
    """A model whose weights, biases included, are far from their init (as after training)."""
    torch.manual_seed(0)
    gpt = GPT(cfg).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return gpt


def load_in_fresh_process(folder: Path, tmp_path: Path, idx: torch.Tensor) -> tuple[dict, dict]:
    torch.save({"idx": idx}, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ""}  # the exported folder, not this checkout, supplies the model code
    proc = subprocess.run([sys.executable, "-c", LOADER, str(folder), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "outputs.pt")], env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), torch.load(tmp_path / "outputs.pt", weights_only=True)


def test_the_flagship_exports_as_custom_code_that_a_fresh_process_loads_with_our_logits(tmp_path, tokenizer_path):
    cfg = flagship_config()
    assert cfg.model_version == "gpt3" and cfg.bias and cfg.attention_pattern == "alternating"
    ours = trained_like(cfg)
    old = os.umask(0o022)
    try:
        assert export_hf(ours, tokenizer_path, tmp_path / "hf", allow_custom_code=True) == CUSTOM_KIND
    finally:
        os.umask(old)
    folder = tmp_path / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "mlproject_gpt" and config["gpt"]["attention_window"] == 8
    assert config["auto_map"] == {"AutoConfig": "configuration_mlproject_gpt.MlprojectGPTConfig",
                                  "AutoModelForCausalLM": "modeling_mlproject_gpt.MlprojectGPTForCausalLM"}
    assert json.loads((folder / MARKER).read_text())["export"] == CUSTOM_KIND
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes

    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size), generator=torch.Generator().manual_seed(1))
    info, theirs = load_in_fresh_process(folder, tmp_path, idx)
    assert info == {"class": "MlprojectGPTForCausalLM", "mlproject_modules": []}
    with torch.no_grad():
        expected = ours(idx)[0]
    assert expected.std() > 0.1 and (theirs["logits"] - expected).abs().max().item() < 1e-4
    assert theirs["greedy"].tolist() == generate(ours, [theirs["prompt"].tolist()], 12, temperature=0.0)[0]


def test_the_shipped_files_import_no_mlproject_module(tmp_path, tokenizer_path):
    export_hf(trained_like(flagship_config()), tokenizer_path, tmp_path / "hf", allow_custom_code=True)
    sources = sorted((tmp_path / "hf").glob("*.py"))
    assert {p.name for p in sources} >= {"modeling_mlproject_gpt.py", "configuration_mlproject_gpt.py",
                                         "mlproject_gpt.py", "mlproject_gpt_config.py", "mlproject_linear.py",
                                         "mlproject_loss.py"}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("mlproject"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("mlproject") for a in node.names), path.name
    assert "class CausalSelfAttention" in (tmp_path / "hf" / "mlproject_gpt.py").read_text()  # our source, readable


def test_without_the_flag_the_refusal_lists_every_reason_at_once_and_names_the_flag(tmp_path, tokenizer_path):
    with pytest.raises(MlprojectError) as info:
        export_hf(trained_like(flagship_config()), tokenizer_path, tmp_path / "hf")
    message = str(info.value)
    assert "\n" not in message
    assert "bias=True is held by no transformers class" in message
    assert "attention_pattern='alternating' is held by no transformers class" in message
    assert "--allow-custom-code" in message and "trust_remote_code=True" in message and "runs that code" in message
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("fields, cls", [
    (dict(model_version="gpt2", norm_type="layernorm", mlp_type="gelu", pos_encoding="learned"), "GPT2LMHeadModel"),
    (dict(norm_type="layernorm", mlp_type="gelu", pos_encoding="learned", bias=False), "GPTNeoForCausalLM"),
    (dict(attention_pattern="dense", bias=False), "LlamaForCausalLM"),
])
def test_a_builtin_class_that_holds_the_model_is_used_even_with_the_flag(tmp_path, tokenizer_path, fields, cls):
    assert export_hf(trained_like(flagship_config(**fields)), tokenizer_path, tmp_path / "hf",
                     allow_custom_code=True) == cls
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == [cls] and "auto_map" not in config
    assert not list((tmp_path / "hf").glob("*.py"))


def test_the_cli_prints_and_records_which_kind_it_wrote(tmp_path, tokenizer_path, capsys):
    checkpoint = save_model_checkpoint(tmp_path / "model.pt", trained_like(flagship_config()))
    args = ["export-hf", "--checkpoint", str(checkpoint), "--tokenizer-path", str(tokenizer_path),
            "--output", str(tmp_path / "hf"), "--log-to-run", "false"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bias=True" in err and "attention_pattern='alternating'" in err
    assert main([*args, "--allow-custom-code"]) == 0
    out = capsys.readouterr().out
    assert f"({CUSTOM_KIND}, sha256" in out
    assert json.loads((tmp_path / "hf" / MARKER).read_text())["export"] == CUSTOM_KIND


@pytest.mark.parametrize("fields, line", [
    (dict(model_version="gpt2"), "export: exact as transformers GPT2LMHeadModel (mlproject export-hf)"),
    (dict(model_version="gpt3", bias=False), "export: exact as transformers GPTNeoForCausalLM (mlproject export-hf)"),
    (dict(model_version="gpt3"), "export: only as custom code (export-hf --allow-custom-code, loaded with "
                                 "trust_remote_code=True): bias=True is held by no transformers class"),
])
def test_the_train_line_says_which_export_a_config_gets(fields, line):
    cfg = GPTConfig(preset=None, **{**TINY, **fields}).resolved()
    assert export_plan(cfg).train_line().startswith(line)


LM_EVAL_TASK = """\
task: tiny_custom
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_lm_eval_runs_a_custom_code_export(tmp_path, tokenizer_path, monkeypatch):
    """`evaluate --tasks --allow-custom-code` scores the flagship through lm-eval's HF wrapper."""
    pytest.importorskip("lm_eval")
    from mlproject.inference.harness import run_tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = [{"question": "def f(x):\n    return", "choices": [" x", " zzzz"], "answer": 0},
            {"question": "import", "choices": [" os", " !!!!"], "answer": 0}]
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks" / "tiny_custom.yaml").write_text(LM_EVAL_TASK.format(data=tmp_path / "tasks" / "data.jsonl"))
    export_hf(trained_like(flagship_config()), tokenizer_path, tmp_path / "hf", allow_custom_code=True)
    metrics = run_tasks(tmp_path / "hf", ["tiny_custom"], task_dir=str(tmp_path / "tasks"), batch_size=2,
                        trust_remote_code=True)
    assert metrics["lm_eval/tiny_custom/acc"] in (0.0, 0.5, 1.0) and metrics["lm_eval/tiny_custom/acc_stderr"] >= 0


def test_the_custom_model_refuses_left_padding_it_cannot_honour(tmp_path, tokenizer_path):
    """Our GPT numbers positions from each row's start: left padding would shift them silently."""
    from transformers import AutoModelForCausalLM

    ours = trained_like(flagship_config())
    export_hf(ours, tokenizer_path, tmp_path / "hf", allow_custom_code=True)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True, local_files_only=True).eval()
    idx = torch.randint(0, 384, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        right = hf(idx, attention_mask=torch.tensor([[1] * 8, [1] * 5 + [0] * 3])).logits
        assert (right - ours(idx)[0]).abs().max().item() < 1e-4
        with pytest.raises(ValueError, match="left padding"):
            hf(idx, attention_mask=torch.tensor([[1] * 8, [0] * 3 + [1] * 5]))


@pytest.mark.parametrize("fields", [
    dict(model_version="gpt3", norm_type="layernorm", mlp_type="gelu", pos_encoding="learned"),  # GPT-3 as published
    dict(tie_embeddings=False, pos_encoding="none", mlp_type="gelu", gelu_approximate="none"),
])
def test_other_models_no_builtin_class_holds_round_trip_in_process(tmp_path, tokenizer_path, fields):
    from transformers import AutoModelForCausalLM

    ours = trained_like(flagship_config(**fields))
    assert export_hf(ours, tokenizer_path, tmp_path / "hf", allow_custom_code=True) == CUSTOM_KIND
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True, local_files_only=True).eval()
    idx = torch.randint(0, 384, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)[0]).abs().max().item() < 1e-4
