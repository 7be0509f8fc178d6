#!/usr/bin/env python3
"""Save one tiny LoRA adapter with peft for each form of target_modules peft accepts.

Writes <out>/<form>/ (adapter_config.json + adapter_model.safetensors) for the Phi model of
testdata/tiny_phi: a list of names, "all-linear", regular expressions, full and partial module
paths, layers_to_transform (a list and an int), peft's default for Phi (null), and F16 weights.
LoraAdapterTest.LoadsEveryTargetModulesFormPeftSaves (lora_adapter_test.cc) loads each folder and
checks that the loader adapts exactly the modules peft saved tensors for.

Usage: make_peft_target_forms.py --base tests/unit/worker/lora/testdata/tiny_phi --out DIR
"""

import argparse
import os

FORMS = {
    "list": dict(target_modules=["v_proj", "fc1"]),
    "all_linear": dict(target_modules="all-linear"),
    "regex": dict(target_modules=r".*\.(q_proj|fc2)"),
    "regex_one_layer": dict(target_modules=r"model\.layers\.1\..*(k_proj|dense)"),
    "paths": dict(target_modules=["self_attn.dense", "model.layers.0.mlp.fc1"]),
    "layers_list": dict(target_modules=["v_proj", "fc1"], layers_to_transform=[1], layers_pattern="layers"),
    "layers_int": dict(target_modules=["q_proj", "dense"], layers_to_transform=0),
    "default": dict(target_modules=None),
    "f16": dict(target_modules=["q_proj", "fc2"]),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="folder with the tiny Phi config.json")
    p.add_argument("--out", required=True, help="folder to write one adapter folder per form into")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PhiConfig, PhiForCausalLM

    config = PhiConfig.from_pretrained(args.base)
    for name, kwargs in FORMS.items():
        torch.manual_seed(0)
        model = get_peft_model(PhiForCausalLM(config), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **kwargs))
        if name == "f16":
            model = model.half()
        model.save_pretrained(os.path.join(args.out, name), safe_serialization=True)


if __name__ == "__main__":
    main()
