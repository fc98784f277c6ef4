"""Tokenise time and peak RSS of ``task=lm`` on a generated text file, first run and cache hit.

Generates a text file of ``--mb`` megabytes (random sentences over a Zipf-distributed
vocabulary of 50,000 words, about 6 bytes a word: 100 MB is ~17M words), then tokenises it
at word level (the vocabulary of the file, then its ids) in a fresh Python process, twice:
the first run counts and encodes, the second finds both in the token cache. Each process
reports its wall time and its peak resident memory (``ru_maxrss``), which includes the
interpreter and torch (about 300 MB on its own, printed as ``baseline``).

    python scripts/measure_tokenise.py [--mb 100] [--level word] [--quick]
    python scripts/measure_tokenise.py --tokens 100000000 --types 250000   # a large vocabulary

``--quick`` uses 10 MB. ``--tokens N --types V`` generates N words over V types instead
(``zipf_corpus.py``, every type present), the large-vocabulary case: peak RSS is then the
number to watch (goal: at most 1.5 GB for 100M tokens over 250k types). Nothing is written
outside a temp folder.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from rnnlab.data.corpus import named_split
from rnnlab.data.cache import cache_dir
from rnnlab.data.tokenised import TokenisedText
if sys.argv[2] == "baseline":
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    raise SystemExit
imported = time.perf_counter()
source = named_split("gen", "train", Path(sys.argv[1]))
hashed = time.perf_counter()
text = TokenisedText(level=sys.argv[2], vocab_size=None, min_freq=1, root=cache_dir())
vocab = text.vocab(source)
ids = text.ids(source, vocab)
done = time.perf_counter()
print(json.dumps({
    "tokens": ids.numel(), "vocab": len(vocab), "hits": text.cache_hits,
    "sha256_s": hashed - imported, "tokenise_s": text.seconds, "total_s": done - imported,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def generate(path: Path, megabytes: float, seed: int = 0) -> None:
    """Random sentences of 5-30 words drawn from a Zipf law over 50k made-up words."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(50_000)]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    target = int(megabytes * 1_000_000)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            chunk = rng.choices(words, weights, k=100_000)
            lines, i = [], 0
            while i < len(chunk):
                n = rng.randint(5, 30)
                lines.append(" ".join(chunk[i : i + n]))
                i += n
            text = "\n".join(lines) + "\n"
            out.write(text)
            written += len(text)


def child(path: Path, level: str, cache: Path) -> dict:
    env = {"RNNLAB_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), level],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated file")
    parser.add_argument("--level", default="word", choices=["word", "char"])
    parser.add_argument("--quick", action="store_true", help="10 MB instead of --mb")
    parser.add_argument("--tokens", type=int, help="generate this many words instead of --mb")
    parser.add_argument("--types", type=int, default=250_000, help="word types, with --tokens")
    args = parser.parse_args()
    megabytes = 10.0 if args.quick else args.mb
    with tempfile.TemporaryDirectory(prefix="rnnlab-tokenise-") as tmp:
        path = Path(tmp) / "train.txt"
        if args.tokens:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from zipf_corpus import write_zipf

            write_zipf(path, tokens=args.tokens, types=args.types, every_type=True)
        else:
            generate(path, megabytes)
        size = path.stat().st_size / 1e6
        base = child(path, "baseline", Path(tmp) / "cache")
        first = child(path, args.level, Path(tmp) / "cache")
        second = child(path, args.level, Path(tmp) / "cache")
    print(f"file: {size:.1f} MB, {first['tokens']:,} tokens, vocabulary {first['vocab']:,}")
    print(f"baseline process (python + torch imported): peak RSS {base['rss_mb']:.0f} MB")
    for label, r in (("first run", first), ("cache hit", second)):
        print(
            f"{label}: sha256 {r['sha256_s']:.2f} s, tokenise {r['tokenise_s']:.2f} s, "
            f"total {r['total_s']:.2f} s, peak RSS {r['rss_mb']:.0f} MB, cache hits {r['hits']}"
        )
    print(f"RATIO tokenise_s_per_100mb={first['tokenise_s'] * 100 / size:.2f}")
    print(f"RATIO cache_hit_total_s={second['total_s']:.2f}")


if __name__ == "__main__":
    main()
