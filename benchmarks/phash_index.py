"""Leakage/near-duplicate pHash search: ``PHashIndex`` vs the pairwise scan it replaced.

Indexes ``--indexed`` seeded 64-bit pHashes (the evaluation images of an audit); a tenth of the queries
are near neighbours of indexed hashes. Times ``--queries`` lookups at ``--radius`` bits through the index
(one numpy XOR + popcount over every indexed hash) and ``--linear-queries`` of them through the pairwise
``ImageHash`` subtraction the audit and the near-duplicate filter used before. Checks both find the same
matches and prints the speed-up and the time each would take for the 26 M training items of the paper's
mixture. Hashing the images costs the same in both and is left out.

    python benchmarks/phash_index.py [--indexed 50000] [--queries 20000] [--radius 6]
"""

from __future__ import annotations

import argparse
import random
import time

import imagehash

from medkit.data.curation import PHashIndex, phash_bits

PAPER_TRAINING_ITEMS = 26_000_000  # Table 1: about 0.9 M + 19 M + 6 M examples over the three stages


def seeded_hashes(rng: random.Random, n: int) -> list[imagehash.ImageHash]:
    return [imagehash.hex_to_hash(f"{rng.getrandbits(64):016x}") for _ in range(n)]


def near(phash: imagehash.ImageHash, bits: int, rng: random.Random) -> imagehash.ImageHash:
    value = phash_bits(phash)
    for bit in rng.sample(range(64), bits):
        value ^= 1 << bit
    return imagehash.hex_to_hash(f"{value:016x}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--indexed", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--radius", type=int, default=6)
    parser.add_argument("--linear-queries", type=int, default=200, help="queries timed on the pairwise scan (slow)")
    args = parser.parse_args()
    rng = random.Random(0)
    indexed = seeded_hashes(rng, args.indexed)
    queries = [near(rng.choice(indexed), rng.randint(0, args.radius + 2), rng) for _ in range(args.queries // 10)]
    queries += seeded_hashes(rng, args.queries - len(queries))
    rng.shuffle(queries)

    start = time.perf_counter()
    index = PHashIndex(args.radius)
    for i, h in enumerate(indexed):
        index.add(h, str(i))
    built = time.perf_counter() - start
    start = time.perf_counter()
    by_index = [[int(key) for key, _ in index.within(q)] for q in queries]
    t_index = time.perf_counter() - start

    sample = queries[: args.linear_queries]
    start = time.perf_counter()
    by_pairs = [[i for i, h in enumerate(indexed) if q - h <= args.radius] for q in sample]
    t_pairs = time.perf_counter() - start

    assert by_index[: len(sample)] == by_pairs, "the index and the pairwise scan disagree"
    matched = sum(bool(m) for m in by_index)
    print(f"{args.indexed:,} indexed pHashes, {args.queries:,} queries ({matched:,} with a match), radius {args.radius}; "
          f"index built in {built:.2f} s; same matches as the pairwise scan on {len(sample)} queries")
    rates = {"ImageHash pairwise scan (before)": t_pairs / len(sample), "PHashIndex": t_index / len(queries)}
    for name, seconds in rates.items():
        print(f"  {name:34s} {seconds * 1e6:10,.1f} us/query  {seconds / rates['PHashIndex']:8,.1f}x "
              f"the index's time; {PAPER_TRAINING_ITEMS:,} queries: {seconds * PAPER_TRAINING_ITEMS / 3600:,.1f} h")


if __name__ == "__main__":
    main()
