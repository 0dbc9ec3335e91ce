"""Builds the public evaluation data under crates/scan/tests/public/ from upstream
repositories (data files only; no upstream code is copied). Needs PyYAML.

  python prepare.py PRESIDIO_RESEARCH_GIT NOSEYPARKER_GIT KINGFISHER_GIT

Each argument is a git directory (bare is fine); files are read at HEAD with `git show`.
Outputs (deterministic):
  presidio_research/synth_subset.json  records of data/synth_dataset_v2.json, unchanged:
      every record holding an entity type we map, plus every 4th other record (negatives).
  noseyparker/examples.jsonl, kingfisher/examples.jsonl  one line per rule example:
      {"rule", "name", "file", "positive", "text", "span", "other_rules"}
      span: byte range of the rule's first capture group (or whole match) in text, found
      with the rule's own pattern (Python `re`; null when Python cannot compile it);
      other_rules: for negative examples, ids of rules of the same repository whose
      pattern matches the text anyway (such a text is not a clean negative).
"""
import json
import re
import subprocess
import sys

import yaml

PRESIDIO_TYPES = {
    "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IBAN_CODE",
    "IP_ADDRESS", "DOMAIN_NAME",
}
# Kingfisher has ~640 rule files; keep the providers our secret detectors cover plus a few
# common ones we do not cover (for the out-of-scope recall line).
KINGFISHER_FILES = {
    "aws", "github", "gitlab", "slack", "stripe", "google", "gcp", "openai", "anthropic",
    "jwt", "pem", "generic", "postgres", "mongodb", "mysql", "redis", "npm", "pypi",
    "sendgrid", "twilio", "mailgun", "huggingface", "heroku", "digitalocean", "azure",
    "shopify", "dockerhub", "datadog",
}


def git_show(repo, path):
    return subprocess.run(
        ["git", "--git-dir", repo, "show", f"HEAD:{path}"],
        check=True, capture_output=True,
    ).stdout


def git_ls(repo):
    out = subprocess.run(
        ["git", "--git-dir", repo, "ls-tree", "-r", "--name-only", "HEAD"],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.splitlines()


def head(repo):
    return subprocess.run(
        ["git", "--git-dir", repo, "rev-parse", "HEAD"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def py_regex(pattern):
    """Rust-regex pattern -> compiled Python regex, or None."""
    flags = 0
    for f, v in (("x", re.X), ("i", re.I), ("s", re.S), ("m", re.M)):
        if f"(?{f})" in pattern:
            flags |= v
            pattern = pattern.replace(f"(?{f})", "")
    pattern = pattern.replace(r"\z", r"\Z")
    try:
        return re.compile(pattern, flags)
    except re.error:
        return None


def span_of(rx, text):
    if rx is None:
        return None
    m = rx.search(text)
    if not m:
        return None
    g = 1 if rx.groups >= 1 and m.group(1) is not None else 0
    s, e = m.span(g)
    return [len(text[:s].encode()), len(text[:e].encode())]


def rule_examples(repo, paths):
    rules = []
    for p in paths:
        doc = yaml.safe_load(git_show(repo, p)) or {}
        fname = p.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        for r in doc.get("rules") or []:
            rules.append((fname, r, py_regex(r.get("pattern", ""))))
    out = []
    for fname, r, rx in rules:
        for text in r.get("examples") or []:
            out.append({"rule": r["id"], "name": r["name"], "file": fname, "positive": True,
                        "text": text, "span": span_of(rx, text), "other_rules": []})
        for text in r.get("negative_examples") or []:
            others = [o["id"] for _, o, orx in rules
                      if orx is not None and o["id"] != r["id"] and orx.search(text)]
            out.append({"rule": r["id"], "name": r["name"], "file": fname, "positive": False,
                        "text": text, "span": None, "other_rules": others})
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def main():
    presidio, nosey, kingfisher = sys.argv[1:4]
    base = __file__.rsplit("/", 1)[0]

    data = json.loads(git_show(presidio, "data/synth_dataset_v2.json"))
    keep, others = [], 0
    for rec in data:
        if any(s["entity_type"] in PRESIDIO_TYPES for s in rec["spans"]):
            keep.append(rec)
        else:
            if others % 4 == 0:
                keep.append(rec)
            others += 1
    with open(f"{base}/presidio_research/synth_subset.json", "w", encoding="utf-8") as f:
        json.dump(keep, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print("presidio-research", head(presidio), len(keep), "records")

    np_paths = [p for p in git_ls(nosey)
                if re.search(r"data/default/builtin/rules/[^/]+\.ya?ml$", p)]
    rows = rule_examples(nosey, np_paths)
    write_jsonl(f"{base}/noseyparker/examples.jsonl", rows)
    print("noseyparker", head(nosey), len(rows), "examples")

    kf_paths = [p for p in git_ls(kingfisher)
                if re.search(r"^data/rules/[^/]+\.ya?ml$", p)
                and p.rsplit("/", 1)[-1].rsplit(".", 1)[0] in KINGFISHER_FILES]
    rows = rule_examples(kingfisher, kf_paths)
    write_jsonl(f"{base}/kingfisher/examples.jsonl", rows)
    print("kingfisher", head(kingfisher), len(rows), "examples")


if __name__ == "__main__":
    main()
