"""Every measured figure the README quotes comes from a committed file it names.

A README region opens with `<!-- numbers: PATH [PATH ...] -->` (paths from the repository root) and
runs to the next such marker or `<!-- /numbers -->`. Every decimal number in a region (a measured
figure: '8.65', '0.88', '−33.6', '5 min 38 s' is not one) must appear, as a number, in one of
the region's files. Outside regions the README quotes no decimal figure at all, except the
versions and settings listed in ALLOWED (they are inputs, not results).
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- numbers: (.+?) -->|<!-- /numbers -->")
NUMBER = re.compile(r"(?<![\w.\-/])\d+\.\d+(?![\w.]*[/\w]*\.(?:py|txt|csv|png|yaml|md)\b)(?!\.\d)")
ALLOWED = {"2512.15335", "3.11", "3.10",  # the paper's arXiv id, Python versions
           "1.58",  # a bit width
           "0.5", "1.6",  # the scale study's widths
           "0.001", "0.01", "0.1", "0.8", "12.5", "103.6"}  # the authors' settings in the protocol table


def _plain(text: str) -> str:
    """The text without code spans, fenced code, link targets and HTML comments (paths, commands, keys)."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "] ", text)
    return re.sub(r"<!--.*?-->", " ", text, flags=re.S)


def regions(readme: str) -> list[tuple[list[str], str]]:
    """(source paths, text) of every numbers region, and ([], text) for the text outside them."""
    out, pos, sources = [], 0, []
    for m in MARKER.finditer(readme):
        out.append((sources, readme[pos:m.start()]))
        sources = m.group(1).split() if m.group(1) else []
        pos = m.end()
    out.append((sources, readme[pos:]))
    return out


def numbers(text: str) -> list[str]:
    return [n for n in NUMBER.findall(_plain(text).replace("\u2212", "-"))]


def found(number: str, source_text: str) -> bool:
    """`number` appears in the file as a number (not as part of a longer one), as written or as a CSV
    writes the same value (5.50 as 5.5, 92.00 as 92.0)."""
    forms = {number, repr(float(number)), number.rstrip("0").rstrip(".")}
    return any(re.search(rf"(?<![\d.]){re.escape(f)}(?![\d]|\.\d)", source_text) for f in forms)


def test_numbers_helper_finds_figures_and_skips_paths_and_code():
    assert numbers("TPR 8.65 [7.75, 9.57] in `a/b.txt`, see benchmarks/results/x.txt, v2.14.1") == \
        ["8.65", "7.75", "9.57"]
    assert not found("8.6", "8.65") and found("8.65", "x 8.65 y") and not found("1.5", "11.5")
    assert found("5.50", "a,5.5,b") and found("92.00", "92.0,") and not found("5.50", "5.51")


def test_every_quoted_figure_is_in_its_named_committed_file():
    readme = README.read_text(encoding="utf-8")
    checked, missing, unsourced = 0, [], []
    for sources, text in regions(readme):
        if not sources:
            unsourced += [n for n in numbers(text) if n not in ALLOWED]
            continue
        files = [ROOT / s for s in sources]
        absent = [str(f) for f in files if not f.is_file()]
        assert not absent, f"README names results files that are not committed: {absent}"
        corpus = "\n".join(f.read_text(encoding="utf-8") for f in files)
        for n in numbers(text):
            if n in ALLOWED:
                continue
            checked += 1
            if not found(n, corpus):
                missing.append(f"{n} (not in {', '.join(sources)})")
    assert not missing, f"{len(missing)} README figures not found in their files: {missing[:20]}"
    assert not unsourced, f"README figures outside any numbers region (name their file): {unsourced[:30]}"
    assert checked >= 100, checked  # the README quotes its measured figures inside regions
    print(f"{checked} README figures verified against their committed files")
