#!/usr/bin/env python3
"""Records the verdict file the labelled-sample test serves through the mock judge.

NOT an LLM judge. No model was reachable when this set was built, so the recorded
verdicts come from this small, deterministic lexical baseline: per category, each
the first distinct cue word found in the text gives 0.55 (MEDIUM), each further one adds
0.2 (capped at 1.0).
It never looks at the labels. The test therefore checks the gateway's judge path and
thresholds end to end; the precision/recall it pins describe this baseline, not Claude.

To record real judge verdicts instead, replace `score()` with a call to the Messages API
using the judge prompt in crates/server/src/moderation.rs, rerun, and update the summary
in docs/moderation.md (the test asserts the summary).

    python3 record_verdicts.py > recorded_verdicts.json
"""
import json
import os
import re

CUES = {
    "harassment": ["idiot", "stupid", "shut up", "loser", "ugly", "dumb", "pathetic", "moron"],
    "hate": ["hate", "inferior", "subhuman", "go back to", "muslims", "jews", "immigrants",
             "blacks", "gays", "race"],
    "sexual": ["sex", "sexual", "porn", "naked", "nude", "horny", "orgasm"],
    "violence": ["kill", "murder", "shoot", "stab", "blood", "beat", "bomb", "attack", "die"],
    "self_harm": ["suicide", "suicidal", "self harm", "self-harm", "cutting", "kill myself",
                  "slicing", "end my life", "overdose", "hurt myself"],
    "dangerous": ["weapon", "explosive", "poison", "meth", "hack"],
}


def score(text):
    t = text.lower()
    out = {}
    for cat, words in CUES.items():
        hits = sum(1 for w in words if re.search(r"\b" + re.escape(w) + r"\b", t))
        out[cat] = round(min(1.0, 0.55 + 0.2 * (hits - 1)), 2) if hits else 0.0
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    verdicts = {}
    tp = fp = tn = fn = 0
    with open(os.path.join(here, "samples.jsonl"), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            s = json.loads(line)
            scores = score(s["text"])
            verdicts[s["id"]] = {"scores": scores, "policy_violation": 0.0}
            blocked = any(v >= 0.5 for k, v in scores.items() if k != "dangerous")
            if blocked and s["flagged"]:
                tp += 1
            elif blocked:
                fp += 1
            elif s["flagged"]:
                fn += 1
            else:
                tn += 1
    print(json.dumps({
        "recorder": "lexical baseline (record_verdicts.py); not an LLM judge",
        "thresholds": "BLOCK_MEDIUM_AND_ABOVE (score >= 0.5) on harassment, hate, sexual, violence, self_harm",
        "summary_at_medium": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "verdicts": verdicts,
    }, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
