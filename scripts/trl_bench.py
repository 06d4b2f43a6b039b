"""TRL's seconds per step on the shapes `ordo bench real` times, on the same model and machine, so the
two are compared side by side in one sitting (BENCHMARKS.md, "Real models against TRL"):

    python3 -m venv .venv-trl && .venv-trl/bin/pip install torch trl==1.16.* peft transformers gguf
    .venv-trl/bin/python scripts/trl_bench.py target/assets/SmolLM2-135M-Instruct.Q4_1.gguf --steps 2
    target/release/ordo bench real --model target/assets/SmolLM2-135M-Instruct.Q4_1.gguf --steps 2

Shapes (those of `ordo_bench::stages::Shapes::real`): SFT 8 rows x 128 tokens (32 prompt tokens masked);
DPO 4 pairs, a 64-token prompt and two 64-token answers; GRPO 4 prompts of 32 tokens x 8 samples x 64
new tokens (no stop token). Random token ids from seed 1, f32, `torch.set_num_threads(2)` unless
`--threads`; each stage once with every weight trained and once with LoRA rank 16, alpha 32, on every
linear layer of the blocks. Prints the median seconds of the steps after the first.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class StepTimes(TrainerCallback):
    """Wall-clock seconds of each optimiser step."""

    def __init__(self):
        self.times, self.start = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.start)


def load(path: Path):
    if path.suffix == ".gguf":
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def ids(gen: torch.Generator, n: int, vocab: int) -> list[int]:
    return torch.randint(2, vocab, (n,), generator=gen).tolist()


def common(steps: int, batch: int, out: str) -> dict:
    return dict(
        output_dir=out,
        max_steps=steps + 1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=1,
    )


def run(stage: str, path: Path, steps: int, lora: bool, out: str) -> float:
    model, tok = load(path)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    peft = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.0) if lora else None
    timer = StepTimes()
    if stage == "sft":
        rows = [{"prompt": tok.decode(ids(gen, 32, vocab)), "completion": tok.decode(ids(gen, 96, vocab))} for _ in range(64)]
        cfg = SFTConfig(**common(steps, 8, out), max_length=128, packing=False)
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft)
    elif stage == "dpo":
        rows = [
            {"prompt": tok.decode(ids(gen, 64, vocab)), "chosen": tok.decode(ids(gen, 64, vocab)), "rejected": tok.decode(ids(gen, 64, vocab))}
            for _ in range(32)
        ]
        cfg = DPOConfig(**common(steps, 4, out), max_length=128, beta=0.1)
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft)
    else:
        rows = [{"prompt": tok.decode(ids(gen, 32, vocab))} for _ in range(64)]

        def reward(completions, **kw):
            return [float(sum(c < "\u0200" for c in text)) for text in completions]

        cfg = GRPOConfig(
            **common(steps, 32, out),
            num_generations=8,
            max_completion_length=64,
            temperature=1.0,
            beta=0.02,
        )
        trainer = GRPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok, reward_funcs=reward, peft_config=peft)
    trainer.add_callback(timer)
    trainer.train()
    return statistics.median(timer.times[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/trl-bench")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import trl

    print(f"TRL {trl.__version__}, torch {torch.__version__}, {a.threads} threads, f32, {a.model}")
    for lora in (False, True):
        for stage in ("sft", "dpo", "grpo"):
            s = run(stage, a.model, a.steps, lora, a.out)
            print(f"  {stage:<4} {'LoRA r16' if lora else 'full    '}  {s:7.2f} s per step (median of {a.steps})")


if __name__ == "__main__":
    main()
