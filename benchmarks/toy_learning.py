"""What the tiny model can learn in minutes: answering multiple choice by letter vs by option text.

Trains the tiny profile's GptOss language model (text only, from random weights, single process) on the
synthetic corpus's ``text_mc`` training items with the reply the assistant gives either as the option
letter ("D") or as the option text ("Acute myocardial infarction", what the corpus uses), and scores
greedy answers to held-out items with the strict scorer (``medkit.eval.scoring``). Same items, seed,
steps and learning rate for both replies; only the reply differs.

    .venv/bin/python benchmarks/toy_learning.py --steps 300 --corpus runs/corpus

Results (machine, date) are in benchmarks/README.md, "What the toy model learns".
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GptOssConfig, GptOssForCausalLM

from medkit.chat.harmony import parse_final, render_chat
from medkit.chat.tokenizer import profile_tokenizer
from medkit.data.schema import read_jsonl
from medkit.data.synthetic import ensure_corpus
from medkit.eval.scoring import score_mc
from medkit.profiles import load_profile


def items(corpus: Path, split: str, reply: str) -> list[tuple[list[dict], dict]]:
    out = []
    for sample in read_jsonl(corpus / "text_mc.jsonl"):
        if sample.meta["split"] != split:
            continue
        messages = [dict(m) for m in sample.messages]
        options, answer = sample.meta["options"], sample.meta["answer"]
        messages[-1]["content"] = answer if reply == "letter" else options[answer]
        out.append((messages, sample.meta))
    return out


def batch(tokenizer, chunk) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rendered = [render_chat(messages, tokenizer) for messages, _ in chunk]
    length = max(len(r.input_ids) for r in rendered)
    ids = torch.full((len(chunk), length), tokenizer.pad_token_id)
    labels = torch.full((len(chunk), length), -100)
    mask = torch.zeros((len(chunk), length), dtype=torch.long)
    for row, r in enumerate(rendered):
        n = len(r.input_ids)
        ids[row, :n] = torch.tensor(r.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor([t if m else -100 for t, m in zip(r.input_ids, r.assistant_mask)])
    return ids, mask, labels


@torch.no_grad()
def strict_accuracy(model, tokenizer, held_out, batch_size: int = 32) -> tuple[float, float]:
    model.eval()
    correct = unparsed = 0
    for start in range(0, len(held_out), batch_size):
        chunk = held_out[start:start + batch_size]
        prompts = [render_chat(m[:-1], tokenizer, add_generation_prompt=True).input_ids for m, _ in chunk]
        length = max(map(len, prompts))
        ids = torch.full((len(prompts), length), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left padding for generation
            ids[row, length - len(p):] = torch.tensor(p)
            mask[row, length - len(p):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        for row, (_, meta) in enumerate(chunk):
            result = score_mc(parse_final(out[row, length:].tolist(), tokenizer), meta["options"], meta["answer"])
            correct += result.correct
            unparsed += result.status == "unparsed"
    model.train()
    return correct / len(held_out), unparsed / len(held_out)


def run(reply: str, corpus: Path, steps: int, lr: float, batch_size: int, n_eval: int) -> dict:
    profile = load_profile("tiny")
    tokenizer = profile_tokenizer(profile)
    torch.manual_seed(profile.seed)
    config = GptOssConfig(**profile.model.text_config, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model = GptOssForCausalLM(config)
    train, held_out = items(corpus, "train", reply), items(corpus, "eval", reply)[:n_eval]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    order = random.Random(profile.seed)
    started = time.perf_counter()
    for _ in range(steps):
        ids, mask, labels = batch(tokenizer, order.sample(train, batch_size))
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    train_seconds = time.perf_counter() - started
    accuracy, unparsed = strict_accuracy(model, tokenizer, held_out)
    return {"reply": reply, "steps": steps, "final_loss": round(loss.item(), 4), "train_s": round(train_seconds, 1),
            "held_out": len(held_out), "strict_accuracy": round(accuracy, 3), "unparsed": round(unparsed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("runs/corpus"), help="synthetic corpus (made if missing)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-eval", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    corpus = ensure_corpus(args.corpus, seed=0)
    for reply in ("letter", "text"):
        print(run(reply, corpus, args.steps, args.lr, args.batch_size, args.n_eval), flush=True)


if __name__ == "__main__":
    main()
