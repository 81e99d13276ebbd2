"""Benchmark: the PII scrubber's false positives on real free text, and its misses on known PII.

``make bench-pii`` → ``bench/results/pii.json``. Three phone detectors side by side, the same
e-mail regex in front of each:

- ``before``: the hand-written rule ShopFlow used until issue 16 (a digit/separator run with
  9-15 digits), copied below verbatim from ``ml/core/pii.py`` at commit df51188;
- ``after``: ``ml.core.pii`` today: libphonenumber's matcher, valid numbers only
  (``Leniency.VALID``), national formats of the regions in ``pii_phone_regions`` (US, GB);
- ``after_no_validity``: the same matcher at ``Leniency.POSSIBLE`` (right length, any range),
  to show what the validity check buys.

Corpora (a "flag" = a value the scrubber would change):

- catalog text, where sellers do not put phone numbers, so every flag is a false positive:
  Amazon Beauty 2014 titles, Online Retail II descriptions (every line, and distinct values),
  Amazon 2018 Gift Cards titles;
- review text (Amazon 2018 All_Beauty and Gift_Cards 5-core: text and summary), where a flag may
  be real: every flagged value is printed and stored for judging;
- a hand-labelled set: real-looking PII in the formats people write (recall), and product codes
  that look like numbers (false positives).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "pii.json"
REVIEWS = ROOT.parent / "shared" / "data" / "amazon_reviews_2018_small"
EXAMPLES = 12

# -- before: ml/core/pii.py at df51188 -------------------------------------------------------
OLD_PHONE_CANDIDATE = re.compile(r"(?<![\w])\+?\(?\d[\d\s().-]{7,}\d(?![\w])")


def _old_replace_phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "[phone]" if 9 <= digits <= 15 else match.group(0)


def old_phones(text: str) -> str:
    return OLD_PHONE_CANDIDATE.sub(_old_replace_phone, text)


# -- the hand-labelled set -------------------------------------------------------------------
# (text, the PII strings in it). Numbers are public business lines or reserved fictional ranges
# (555-01xx, Ofcom's 020 7946 0xxx), written the ways people write them.
TRUE_POSITIVES: list[tuple[str, list[str]]] = [
    ("call me at (212) 555-0123 after 5", ["(212) 555-0123"]),
    ("my cell is 415-555-0199", ["415-555-0199"]),
    ("ring 415.555.0142 anytime", ["415.555.0142"]),
    ("number: 4155550173", ["4155550173"]),
    ("text +1 415 555 0110 pls", ["+1 415 555 0110"]),
    ("+1 (617) 253-1000 is the front desk", ["+1 (617) 253-1000"]),
    ("customer service 1-800-275-2273 was useless", ["1-800-275-2273"]),
    ("called 800.275.2273 twice", ["800.275.2273"]),
    ("White House comment line 202-456-1111", ["202-456-1111"]),
    ("reach me on 212/555/0187", ["212/555/0187"]),
    ("phone 212 555 0134 ext. 7", ["212 555 0134"]),
    ("contact 020 7946 0018 (office)", ["020 7946 0018"]),
    ("mobile 07911 123456", ["07911 123456"]),
    ("mob: 07911123456", ["07911123456"]),
    ("from abroad +44 20 7946 0958", ["+44 20 7946 0958"]),
    ("+44 (0)20 7930 4832 Buckingham Palace", ["+44 (0)20 7930 4832"]),
    ("Manchester shop 0161 496 0000", ["0161 496 0000"]),
    ("freephone 0800 800 150", ["0800 800 150"]),
    ("intl 0044 20 7946 0321", ["0044 20 7946 0321"]),
    ("Berlin store +49 30 901820", ["+49 30 901820"]),
    ("Paris: +33 1 42 68 53 00", ["+33 1 42 68 53 00"]),
    ("Sydney +61 2 9374 4000", ["+61 2 9374 4000"]),
    ("email jane.doe@example.com for a refund", ["jane.doe@example.com"]),
    ("JOHN.SMITH@MAIL.EXAMPLE.CO.UK wrote", ["JOHN.SMITH@MAIL.EXAMPLE.CO.UK"]),
    ("write to shop+orders@example-store.com", ["shop+orders@example-store.com"]),
    ("a_b-c.99@sub.example.org, thanks", ["a_b-c.99@sub.example.org"]),
    ("both: ann@example.net / (646) 555-0166", ["ann@example.net", "(646) 555-0166"]),
    # Hard cases, kept to show what neither detector catches:
    ("jane dot doe at gmail dot com", ["jane dot doe at gmail dot com"]),  # obfuscated e-mail
    ("call 555-0123 (no area code)", ["555-0123"]),  # a 7-digit local number
]
# Look like numbers, are not: issue 16's part number and string gauges, and their kin.
TRUE_NEGATIVES: list[str] = [
    "Replacement cartridge 099-0502-000",
    "Guitar strings 45-65-85-105",
    "Hair Chalk Kit 6pc - UPC: 700580458542",
    "Kolinsky Nail Brush Round Size 16 18 20 22 (20)",
    "ISBN 978-0-306-40615-7",
    "Order #112-4567890-1234567 arrived",
    "Model 2012-2013-2014 edition",
    "Set of 12 x 250 ml, 3.4 oz / 100 ml",
    "SKU 10002 85123A 84029E",
    "Bought 2014-06-15, used 3 times",
    "Serial 4-011-2345-678",
    "EAN 5012345678900",
]


def detectors() -> dict[str, Callable[[str], str]]:
    """Each detector: text in, text with the *phones* it finds replaced (e-mails handled apart)."""
    from phonenumbers import Leniency, PhoneNumberMatcher

    from ml.core import pii
    from ml.core.settings import Settings

    regions = Settings().pii_phone_regions

    def possible(text: str) -> str:
        spans = sorted(
            (m.start, m.end)
            for region in regions
            for m in PhoneNumberMatcher(text, region, leniency=Leniency.POSSIBLE)
        )
        for start, end in reversed(spans):
            text = text[:start] + "[phone]" + text[end:]
        return text

    def after(text: str) -> str:
        for start, end in reversed(pii.phone_spans(text, regions)):
            text = text[:start] + "[phone]" + text[end:]
        return text

    return {"before": old_phones, "after": after, "after_no_validity": possible}


def corpora(reviews: Path) -> dict[str, dict[str, Any]]:
    """name -> {kind, values (a Series, nulls dropped), note}."""
    import pandas as pd

    out: dict[str, dict[str, Any]] = {}
    beauty = pd.read_parquet(ROOT / "data" / "amazon_beauty_2014_5core" / "items.parquet")
    out["beauty_2014_titles"] = {"kind": "catalog", "values": beauty["title"]}
    retail = pd.read_parquet(
        ROOT / "data" / "uci_online_retail_ii" / "online_retail_ii.parquet", columns=["Description"]
    )["Description"]
    out["retail_descriptions_all_lines"] = {"kind": "catalog", "values": retail}
    out["retail_descriptions_distinct"] = {"kind": "catalog", "values": retail.drop_duplicates()}
    if reviews.is_dir():
        gift_items = pd.read_parquet(reviews / "amazon2018_gift_cards_items.parquet")
        out["gift_cards_2018_titles"] = {"kind": "catalog", "values": gift_items["title"]}
        for name, file in [
            ("all_beauty", "amazon2018_all_beauty_5"),
            ("gift_cards", "amazon2018_gift_cards_5"),
        ]:
            frame = pd.read_parquet(reviews / f"{file}.parquet")
            for column in ["review_text", "summary"]:
                out[f"{name}_2018_{column}"] = {"kind": "review", "values": frame[column]}
    for corpus in out.values():
        corpus["values"] = corpus["values"].dropna().astype(str).reset_index(drop=True)
    return out


def flag_corpus(values: Any, detect: dict[str, Callable[[str], str]]) -> dict[str, Any]:
    """Flags per detector (each distinct value run once, counted per row)."""
    from ml.core.pii import EMAIL

    counts = values.value_counts()
    emails = {v for v in counts.index if EMAIL.search(v)}
    result: dict[str, Any] = {
        "values": len(values),
        "distinct": len(counts),
        "email_flagged": int(counts[list(emails)].sum()) if emails else 0,
        "email_examples": sorted(emails)[:EXAMPLES],
    }
    for name, fn in detect.items():
        started = time.perf_counter()
        flagged = {}
        for value in counts.index:
            text = fn(value)
            if text != value:
                flagged[value] = text
        seconds = time.perf_counter() - started
        rows = int(counts[list(flagged)].sum()) if flagged else 0
        result[name] = {
            "phone_flagged": rows,
            "phone_flag_rate": round(rows / max(len(values), 1), 6),
            "phone_flagged_distinct": len(flagged),
            "us_per_distinct_value": round(seconds / max(len(counts), 1) * 1e6, 1),
            "examples": [{"text": v, "scrubbed": t} for v, t in list(flagged.items())[:EXAMPLES]],
        }
    return result


def labelled(detect: dict[str, Callable[[str], str]]) -> dict[str, Any]:
    """Recall on TRUE_POSITIVES (a PII string counts as caught when it is gone from the output),
    false positives on TRUE_NEGATIVES. The e-mail regex is applied first, as in the scrubber."""
    from ml.core.pii import EMAIL, EMAIL_TOKEN

    def kind(item: str) -> str:
        return "email" if "@" in item or " at " in item else "phone"

    out: dict[str, Any] = {}
    items = [item for _, pii in TRUE_POSITIVES for item in pii]
    total = len(items)
    for name, fn in detect.items():
        caught, missed = 0, []
        for text, pii in TRUE_POSITIVES:
            scrubbed = fn(EMAIL.sub(EMAIL_TOKEN, text))
            for item in pii:
                if item in scrubbed:
                    missed.append(item)
                else:
                    caught += 1
        by_kind = {
            k: f"{sum(kind(i) == k for i in items if i not in missed)}/{sum(kind(i) == k for i in items)}"
            for k in ("phone", "email")
        }
        false_positives = [t for t in TRUE_NEGATIVES if fn(EMAIL.sub(EMAIL_TOKEN, t)) != t]
        out[name] = {
            "pii_strings": total,
            "caught": caught,
            "recall": round(caught / total, 4),
            "caught_by_kind": by_kind,
            "missed": missed,
            "negatives": len(TRUE_NEGATIVES),
            "false_positives": false_positives,
        }
    return out


def machine() -> dict[str, Any]:
    import phonenumbers
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "phonenumbers": phonenumbers.__version__,
        "load_average": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reviews", type=Path, default=REVIEWS, help="folder of the Amazon 2018 review datasets"
    )
    args = parser.parse_args()

    from ml.core.settings import Settings

    detect = detectors()
    results = {}
    for name, corpus in corpora(args.reviews).items():
        print(f"scanning {name} ({len(corpus['values']):,} values) …", flush=True)
        results[name] = {"kind": corpus["kind"], **flag_corpus(corpus["values"], detect)}
    truth = labelled(detect)
    report = {
        "benchmark": "pii",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "phone_regions": Settings().pii_phone_regions,
        "detectors": {
            "before": "hand-written regex: digit/separator run with 9-15 digits (ml/core/pii.py at df51188)",
            "after": "phonenumbers PhoneNumberMatcher, Leniency.VALID, regions = phone_regions",
            "after_no_validity": "phonenumbers PhoneNumberMatcher, Leniency.POSSIBLE (no validity check)",
        },
        "machine": machine(),
        "corpora": results,
        "labelled": truth,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    names = list(detect)
    print(f"\nphone flags per corpus (rate = flagged / values); regions {report['phone_regions']}")
    print(f"{'corpus':<34} {'kind':<8} {'values':>10} " + " ".join(f"{n:>22}" for n in names))
    for name, r in results.items():
        cells = " ".join(f"{r[n]['phone_flagged']:>8,} ({r[n]['phone_flag_rate']:>9.4%})" for n in names)
        print(f"{name:<34} {r['kind']:<8} {r['values']:>10,} {cells}")
    print("\nflagged review text (judge these):")
    for name, r in results.items():
        if r["kind"] != "review":
            continue
        for n in names:
            for example in r[n]["examples"]:
                print(f"  [{name} / {n}] {example['text'][:160]!r}\n      -> {example['scrubbed'][:160]!r}")
        for text in r["email_examples"]:
            print(f"  [{name} / email] {text[:160]!r}")
    print("\nflagged catalog text (false positives):")
    for name, r in results.items():
        if r["kind"] == "catalog":
            for n in names:
                for example in r[n]["examples"][:5]:
                    print(f"  [{name} / {n}] {example['text'][:120]!r}")
    print("\nhand-labelled set:")
    for n in names:
        t = truth[n]
        print(
            f"  {n:<18} recall {t['caught']}/{t['pii_strings']} = {t['recall']:.1%}   "
            f"(phones {t['caught_by_kind']['phone']}, e-mails {t['caught_by_kind']['email']})   "
            f"false positives {len(t['false_positives'])}/{t['negatives']}"
        )
        print(f"  {'':<18} missed: {t['missed']}")
        print(f"  {'':<18} false positives: {t['false_positives']}")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
