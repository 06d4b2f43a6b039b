#!/usr/bin/env python3
"""Writes the arithmetic datasets of examples/smollm2-arith.toml (deterministic; seed 0).

  python3 scripts/make-arith-data.py      # -> examples/data/arith-sft.jsonl, arith-prefs.jsonl

SFT: chat conversations asking for a small sum/product and answering with the worked steps.
Preferences: the same questions as ChatML prompts; chosen = worked steps and the right answer,
rejected = a bare wrong answer (off by 1-9). Responses end with the model's EOS, added by ordo.
"""
import json
import random
from pathlib import Path

rng = random.Random(0)
out = Path(__file__).resolve().parent.parent / "examples" / "data"
out.mkdir(parents=True, exist_ok=True)


def problem():
    a, b, c = rng.randint(2, 29), rng.randint(2, 9), rng.randint(0, 29)
    if rng.random() < 0.5:
        return f"{a}*{b}+{c}", [f"{a}*{b} = {a * b}", f"{a * b}+{c} = {a * b + c}"], a * b + c
    return f"{a}+{c}+{b}", [f"{a}+{c} = {a + c}", f"{a + c}+{b} = {a + c + b}"], a + c + b


def worked(steps, answer):
    return f"{', '.join(steps)}. The answer is {answer}."


with open(out / "arith-sft.jsonl", "w") as f:
    for _ in range(300):
        expr, steps, answer = problem()
        msgs = [{"role": "user", "content": f"What is {expr}?"}, {"role": "assistant", "content": worked(steps, answer)}]
        f.write(json.dumps({"messages": msgs}) + "\n")

with open(out / "arith-prefs.jsonl", "w") as f:
    for _ in range(200):
        expr, steps, answer = problem()
        prompt = f"<|im_start|>user\nWhat is {expr}?<|im_end|>\n<|im_start|>assistant\n"
        wrong = answer + rng.choice([-1, 1]) * rng.randint(1, 9)
        f.write(json.dumps({"prompt": prompt, "chosen": worked(steps, answer),
                            "rejected": f"The answer is {wrong}."}) + "\n")
