#!/usr/bin/env python3
"""Write a random LoRA adapter for a Phi model folder, in the PEFT format, made by peft itself.

The folder holds what `peft` saves (PeftModel.save_pretrained) and what phi-worker loads with
--lora NAME=DIR (services/worker/lora):
  adapter_config.json         peft_type LORA, r, lora_alpha, use_rslora, target_modules,
                              base_model_name_or_path, ...
  adapter_model.safetensors   base_model.model.model.layers.<l>.self_attn.q_proj.lora_A.weight
                              [r, in] and .lora_B.weight [out, r] for every targeted module of
                              every layer, in --dtype

The adapter is peft's LoraConfig(r, lora_alpha, target_modules, use_rslora,
init_lora_weights=False) applied to transformers' PhiForCausalLM built from the folder's
config.json. init_lora_weights=False keeps nn.Linear's initialisation for both matrices
(uniform in +-1/sqrt(fan_in)), so B is not zero and the adapter changes the model's output
(a fresh adapter for training has B = 0). Only config.json is read: the base model is built
without weights (accelerate's init_empty_weights), so the Phi-1.5 shape takes seconds and no
memory for its 1.4B parameters. The weights depend only on --seed and the shape.

The scaling the model applies is lora_alpha / r, or lora_alpha / sqrt(r) with --rslora.

Examples:
  make_lora.py --base models/phi-1_5-random-bf16 --out /tmp/lora-r16 --rank 16
  make_lora.py --base DIR --out OUT --rank 8 --alpha 32 --targets attention --rslora --dtype bf16
  make_lora.py --base DIR --out OUT --targets q_proj,v_proj,fc2 --seed 7 --base-model-name microsoft/phi-1_5
"""

import argparse
import json
import os
import sys

MODULES = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
TARGET_SETS = {"all": MODULES, "attention": MODULES[:4], "mlp": MODULES[4:]}
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def parse_targets(spec):
    if spec in TARGET_SETS:
        return list(TARGET_SETS[spec])
    names = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in names if t not in MODULES]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"{', '.join(bad) or 'empty'}: expected all, attention, mlp or a comma list of "
            f"{', '.join(MODULES)}")
    return sorted(set(names), key=MODULES.index)


def make_adapter(base_dir, out_dir, rank, alpha, targets, rslora=False, seed=0, dtype="f32", base_model_name=None):
    """Writes the adapter into out_dir; returns its adapter_config.json as a dict."""
    # save_pretrained would look base_model_name_or_path up on the Hub (for the model card).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from accelerate import init_empty_weights
    from peft import LoraConfig, get_peft_model
    from transformers import PhiConfig, PhiForCausalLM

    config = PhiConfig.from_pretrained(base_dir)
    with init_empty_weights():
        model = PhiForCausalLM(config)
    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), use_rslora=rslora,
                      init_lora_weights=False, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    # peft moved the new A and B to the base layer's (meta) device: give them memory and
    # nn.Linear's initialisation again (what init_lora_weights=False leaves), in name order
    # from one seeded generator.
    torch.manual_seed(seed)
    for name, module in sorted(peft_model.named_modules(), key=lambda nm: nm[0]):
        if isinstance(module, torch.nn.Linear) and (".lora_A." in name + "." or ".lora_B." in name + "."):
            module.to_empty(device="cpu")
            module.reset_parameters()
            module.to(getattr(torch, DTYPES[dtype]))
    peft_model.peft_config["default"].base_model_name_or_path = (
        base_model_name if base_model_name is not None else os.path.basename(os.path.normpath(base_dir)))
    os.makedirs(out_dir, exist_ok=True)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    with open(os.path.join(out_dir, "adapter_config.json"), encoding="utf-8") as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="make_lora.py", description=__doc__.split("\n")[0],
        epilog="\n".join(__doc__.split("\n")[2:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the Phi model folder the adapter is for (its config.json is read)")
    p.add_argument("--out", required=True, help="adapter folder to write (created; existing adapter files replaced)")
    p.add_argument("-r", "--rank", type=int, default=8, help="LoRA rank r (default 8; phi-worker's limit: --max-lora-rank)")
    p.add_argument("--alpha", type=float, default=None, help="lora_alpha (default 2 x rank)")
    p.add_argument("--targets", type=parse_targets, default=list(MODULES),
                   help="modules to adapt: all (default), attention (q_proj,k_proj,v_proj,dense), mlp (fc1,fc2), "
                        "or a comma list of " + ",".join(MODULES))
    p.add_argument("--rslora", action="store_true", help="use_rslora: scaling lora_alpha / sqrt(r) instead of / r")
    p.add_argument("--seed", type=int, default=0, help="random seed of the A and B matrices (default 0)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="dtype of the saved tensors (default f32)")
    p.add_argument("--base-model-name", help="base_model_name_or_path to record (default: the --base folder's name)")
    args = p.parse_args(argv)
    if args.rank < 1:
        p.error("--rank must be >= 1")
    if not os.path.isfile(os.path.join(args.base, "config.json")):
        p.error(f"--base: no config.json in {args.base}")
    alpha = args.alpha if args.alpha is not None else 2.0 * args.rank
    cfg = make_adapter(args.base, args.out, args.rank, alpha, args.targets, args.rslora, args.seed, args.dtype,
                       args.base_model_name)
    scaling = alpha / (args.rank ** 0.5 if args.rslora else args.rank)
    print(f"{args.out}: LoRA r={cfg['r']} alpha={cfg['lora_alpha']:g} (scaling {scaling:g}) on "
          f"{','.join(sorted(cfg['target_modules'], key=MODULES.index))}, {args.dtype}, "
          f"base {cfg['base_model_name_or_path']!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
