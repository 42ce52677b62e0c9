"""A mutation corpus of configs: every shipped config, mutated a few ways each under a fixed seed
(lines deleted, duplicated or cut, values replaced by hostile scalars, unknown keys, stray bytes),
goes through `tinyseek check`. Each must be accepted (exit 0) or refused with exit 2 and one line
naming what is wrong; none may crash, hang or end with another status. The refused ones, given to
`run`, exit 2 the same way and write nothing."""
import random
import re
import subprocess
from pathlib import Path

from conftest import tinyseek_bin

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ["-1", "0", "1e308", "-1e308", ".nan", ".inf", '""', "[]", "{}", "abc", "~", "true", '"\\u0000"',
           "99999999999999999999999", "&a x", "*nope", "{a: 1", "[1, 2", "'", "|", "? [a, b]", "!!binary AAAA"]


def mutations(text: str, rng: random.Random):
    lines = text.splitlines(keepends=True)
    body = [i for i, l in enumerate(lines) if l.strip() and not l.lstrip().startswith("#")]
    out = []
    i = rng.choice(body)
    out.append(("delete line", "".join(lines[:i] + lines[i + 1:])))
    i = rng.choice(body)
    out.append(("duplicate line", "".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])))
    for _ in range(3):
        i = rng.choice([j for j in body if ":" in lines[j]])
        head = lines[i].split(":", 1)[0]
        out.append(("hostile value", "".join(lines[:i] + [f"{head}: {rng.choice(HOSTILE)}\n"] + lines[i + 1:])))
    i = rng.choice(body)
    indent = len(lines[i]) - len(lines[i].lstrip())
    out.append(("unknown key", "".join(lines[:i] + [" " * indent + "bogus_key: 1\n"] + lines[i:])))
    cut = rng.randrange(1, len(text))
    out.append(("truncated", text[:cut]))
    at = rng.randrange(len(text))
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))).decode("latin-1")
    out.append(("stray bytes", text[:at] + junk + text[at:]))
    return out


def test_mutated_configs_are_accepted_or_refused_in_one_line(tmp_path):
    rng = random.Random(2026)
    refused, tried = [], 0
    for cfg in sorted((ROOT / "configs").glob("*.yaml")):
        for what, text in mutations(cfg.read_text(), rng):
            path = tmp_path / f"{cfg.stem}_{tried}.yaml"
            path.write_bytes(text.encode("latin-1", errors="replace") if isinstance(text, str) else text)
            tried += 1
            r = subprocess.run([tinyseek_bin(), "check", str(path)], cwd=tmp_path, capture_output=True, text=True,
                               errors="replace", timeout=60)
            case = f"{cfg.name}, {what}: {path.read_bytes()[:2000]!r}"
            assert r.returncode in (0, 2), f"{case}\nexit {r.returncode}: {r.stderr}"
            if r.returncode == 2:
                err = r.stderr.strip().split("\n")
                assert len(err) == 1 and err[0].startswith("error: "), f"{case}\n{r.stderr}"
                # file:line wherever a line exists (an empty document has none)
                assert re.search(r"\.yaml:\d+", err[0]) or "the config is empty" in err[0], f"{case}\n{r.stderr}"
                refused.append(path)
    assert tried >= 100 and len(refused) >= tried // 3, (tried, len(refused))
    for path in refused[::8]:  # `run` refuses them the same way, before writing anything
        r = subprocess.run([tinyseek_bin(), "run", str(path), "--set", f"output.dir={tmp_path / 'runs'}"],
                           cwd=tmp_path, capture_output=True, text=True, errors="replace", timeout=60)
        assert r.returncode == 2, f"{path}: {r.stdout}{r.stderr}"
    assert not (tmp_path / "runs").exists()
