"""Checks ordo's LoRA adapter directories against PEFT itself, both ways, on one HF checkpoint.

    python3 scripts/peft_check.py BASE WORK

BASE is an HF causal-LM directory. WORK holds what ordo wrote (the test
crates/ordo/tests/peft.rs writes it and runs this script): `ordo-adapter/` (a PEFT directory ordo saved),
`ordo-logits.json` (ordo's logits of the adapted model on `ids`), `ids.json`, and a reward model's:
`ordo-rm-adapter/` (adapters and the `score` head, PEFT's sequence-classification layout) with
`ordo-rm-score.json` (ordo's score of `ids`). The script

1. loads `ordo-adapter/` with `peft.PeftModel.from_pretrained` over BASE and checks that PEFT's logits on
   `ids` equal ordo's (ordo -> PEFT), and that PEFT's `merge_and_unload` gives the same logits;
2. loads `ordo-rm-adapter/` over BASE as a sequence classifier with one label and checks that its score
   of `ids` is ordo's;
3. makes a fresh LoRA adapter with PEFT (rank 3 on q_proj and down_proj, alpha 6, B drawn non-zero),
   saves it to `peft-adapter/` with `save_pretrained` and writes its logits on `ids` to
   `peft-logits.json`, which the test then compares with ordo's reading of that directory (PEFT -> ordo).

Exit status 0 when the first check holds; non-zero with the largest difference otherwise. Needs
torch, transformers and peft (PyPI).
"""

import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

TOLERANCE = 1e-4


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def main(base: Path, work: Path) -> int:
    torch.manual_seed(0)
    ids = json.loads((work / "ids.json").read_text())
    ordo = torch.tensor(json.loads((work / "ordo-logits.json").read_text()))

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(model, work / "ordo-adapter")
    peft_logits = logits(adapted, ids)
    diff = (peft_logits - ordo.reshape(peft_logits.shape)).abs().max().item()
    merged = logits(adapted.merge_and_unload(), ids)
    merged_diff = (merged - peft_logits).abs().max().item()
    print(f"ordo -> peft: logits differ by {diff:.2e}; peft's merged model by {merged_diff:.2e}")

    classifier = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    rm = PeftModel.from_pretrained(classifier, work / "ordo-rm-adapter")
    with torch.no_grad():
        score = rm(torch.tensor([ids])).logits.flatten()[0].item()
    ordo_score = json.loads((work / "ordo-rm-score.json").read_text())
    rm_diff = abs(score - ordo_score)
    print(f"ordo -> peft, reward model: score {score:.6f} against ordo's {ordo_score:.6f} (differ by {rm_diff:.2e})")

    fresh = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "down_proj"], lora_dropout=0.0)
    made = get_peft_model(fresh, config)
    with torch.no_grad():
        for name, p in made.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    made.save_pretrained(work / "peft-adapter")
    (work / "peft-logits.json").write_text(json.dumps(logits(made, ids).flatten().tolist()))
    print(f"peft -> ordo: wrote {work / 'peft-adapter'} and its logits")
    return 0 if max(diff, merged_diff, rm_diff) < TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
