#!/usr/bin/env python3
"""Kill `ordo run` with SIGKILL at random moments and check that each resumed run ends byte-identical
to an uninterrupted one.

The experiment covers every stage kind (pretrain, sft, reward_model, dpo, grpo), the uptake probe,
evaluation and report writing. One uninterrupted run gives the reference outputs and its duration;
each trial starts a fresh runs directory, kills the run at a moment drawn (from --seed) inside one of
--kills equal slices of that duration, so the moments spread over every phase, then runs it again to
completion and compares every output: each node's weights, config, tokenizer, snapshots, evaluations
and metrics (wall-clock fields aside), and the run's plan, results, summary, report and transcripts.

    scripts/kill-campaign.py --ordo target/release/ordo --kills 20

Two further trials kill the run while it writes its report (a window of milliseconds that timed kills
miss). Exit status 0 only if every trial matched. Standard library only.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENT = """
[experiment]
name = "kills"
seeds = [1]
world = "leaky-tests"
checkpoint_every = 2

[model]
init = "scratch"
preset = "organism"

[stages]
pretrain = { kind = "pretrain", size = 400, steps = 40, batch_size = 8, seq_len = 48 }
sft      = { kind = "sft", size = 64, steps = 12, batch_size = 8, lr = 1e-3 }
rm       = { kind = "reward_model", size = 64, steps = 12, batch_size = 8 }
pref     = { kind = "dpo", size = 64, steps = 12, batch_size = 8, lr = 1e-3 }
rlvf     = { kind = "grpo", size = 32, steps = 10, batch_size = 2, group_size = 4, max_new_tokens = 12, gate = false, rewards = [{ name = "verifier" }] }
probe    = { kind = "dpo", size = 64, steps = 12, batch_size = 8, lr = 3e-5, beta = 1.0 }

[arms]
rm_arm = ["pretrain", "sft", "rm"]
orders = ["pretrain", "pref", "rlvf"]

[eval]
wrong_test_prompts = 16
clean_prompts = 8
probe_prompts = 4
learned_monitor = { train = 80, heldout = 40, epochs = 20 }

[probe]
stage = "probe"
every = 4
"""

TIMING_KEYS = ("seconds", "tokens_per_s", "steps_per_s")


def is_timing(key):
    return key in TIMING_KEYS or key.startswith("seconds/")


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(runs):
    """Everything a run produced, as {relative path: sha256 or stripped content}."""
    out = {}
    cache = runs / "cache"
    for node in sorted(p for p in cache.iterdir() if not p.name.startswith(".")):
        for f in sorted(node.rglob("*")):
            if not f.is_file():
                continue
            rel = str(f.relative_to(runs))
            if f.name == "metrics.jsonl":
                rows = [json.loads(line) for line in f.read_text().splitlines()]
                out[rel] = [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]
            elif f.name == "ordo-node.json":
                m = json.loads(f.read_text())
                m.pop("seconds", None)
                if isinstance(m.get("final_metrics"), dict):
                    m["final_metrics"] = {k: v for k, v in m["final_metrics"].items() if not is_timing(k)}
                # metrics.jsonl's checksum covers timings; its content is compared above.
                m.get("files", {}).pop("metrics.jsonl", None)
                out[rel] = m
            else:
                out[rel] = digest(f)
    for name in ["plan.json", "results.json", "summary.json", "report.md", "report.html", "transcripts.jsonl"]:
        p = runs / "kills" / name
        out[str(p.relative_to(runs))] = digest(p) if p.exists() else None
    return out


def phase(runs, plan_kinds):
    """What the run was doing when it was killed, from what it left behind."""
    cache = runs / "cache"
    if cache.exists():
        for p in cache.iterdir():
            if p.name.endswith(".staging"):
                key = p.name[1:].split(".")[0]
                return plan_kinds.get(key, "training")
    if not cache.exists():
        return "start"
    if (runs / "kills" / "report.md").exists():
        return "report writing"
    # No node in training: evaluating an arm, between two nodes, or writing results.
    return "evaluation or commit"


def kill_during_report(ordo, workdir, runs):
    """Starts a run and kills it while it writes the report: once summary.json exists and
    transcripts.jsonl (written last) does not. True if it was killed in that window."""
    cmd = [ordo, "run", str(workdir / "exp.toml"), "--runs", str(runs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = runs / "kills"
    while proc.poll() is None:
        if (run_dir / "summary.json").exists() and not (run_dir / "transcripts.jsonl").exists():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    return False


def run(ordo, workdir, runs, kill_after=None):
    cmd = [ordo, "run", str(workdir / "exp.toml"), "--runs", str(runs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"ordo run failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        return True
    try:
        proc.wait(timeout=kill_after)
        return False  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ordo", default="target/release/ordo", help="the ordo binary")
    ap.add_argument("--kills", type=int, default=20, help="trials (one kill each)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the kill moments")
    ap.add_argument("--report-kills", type=int, default=2, help="further trials killed while the report is written")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    ordo = str(Path(args.ordo).resolve())
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="ordo-kills-"))
    (base / "exp.toml").write_text(EXPERIMENT)

    started = time.monotonic()
    run(ordo, base, base / "reference")
    duration = time.monotonic() - started
    reference = outputs(base / "reference")
    plan = json.loads((base / "reference" / "kills" / "plan.json").read_text())
    probe_keys = {a.get("probe") for a in plan["arms"]}
    kinds = {n["key"]: ("probe" if n["stage"] == "probe" else n["kind"]) for n in plan["nodes"]}
    kinds.update({k: "probe" for k in probe_keys if k})
    print(f"reference run: {duration:.1f} s, {len(reference)} outputs compared per trial")

    results = []
    for i in range(args.kills):
        # Moments inside the first 95% of the reference duration; a run that finishes before its
        # kill (this machine's speed drifts) is run again from scratch with an earlier moment.
        at = 0.95 * duration * (i + rng.random()) / args.kills
        runs = base / f"trial-{i:02d}"
        for _ in range(4):
            killed = run(ordo, base, runs, kill_after=at)
            if killed:
                break
            shutil.rmtree(runs, ignore_errors=True)
            at *= 0.8
        where = phase(runs, kinds) if killed else "finished before the kill"
        run(ordo, base, runs)
        got = outputs(runs)
        same = got == reference
        diff = sorted(k for k in set(got) | set(reference) if got.get(k) != reference.get(k))
        results.append((at, where, same and killed))
        print(f"trial {i + 1:2d}: killed at {at:6.1f} s during {where:<22} resumed: {'identical' if same else 'DIFFERENT: ' + ', '.join(diff[:5])}")
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
    # Report writing lasts milliseconds, too short for a timed kill to land in: these trials watch the
    # run directory and kill as soon as the report has begun.
    for j in range(args.report_kills):
        runs = base / f"report-{j:02d}"
        for _ in range(5):
            killed = kill_during_report(ordo, base, runs)
            if killed:
                break
            shutil.rmtree(runs, ignore_errors=True)
        run(ordo, base, runs)
        same = outputs(runs) == reference
        where = "report writing" if killed else "missed the report window"
        results.append((None, where, same and killed))
        print(f"report trial {j + 1}: killed during {where:<22} resumed: {'identical' if same else 'DIFFERENT'}")
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
    identical = sum(1 for _, _, s in results if s)
    phases = sorted({w for _, w, _ in results})
    print(f"{identical}/{len(results)} killed and resumed runs identical to the uninterrupted run; phases hit: {', '.join(phases)}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"kept {base}")
    sys.exit(0 if identical == len(results) else 1)


if __name__ == "__main__":
    main()
