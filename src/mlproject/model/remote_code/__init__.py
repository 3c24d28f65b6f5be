"""The transformers classes of a custom-code export (`export-hf --allow-custom-code`).

`model.hf_custom` copies these two files, with the model source they import (`model/gpt.py`,
`model/config.py`, `model/linear.py`, `config.py`, `errors.py`), into the export folder, each
`mlproject.` import rewritten to a relative one, so the folder loads without this package:
`AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` runs the same GPT.
"""
