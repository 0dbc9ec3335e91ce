//! Prompt-injection heuristics. Trigger words are found by the shared prefilter on the
//! normalised text; each trigger is confirmed by looking at the letters around it (so
//! "i g n o r e  a l l  p r e v i o u s" and "IgnoreAllPrevious" both count), and
//! invisible-character evidence comes from normalisation. Signals of one kind count once;
//! the score is `1 - Π(1 - w)` over kinds.

use std::ops::Range;

use super::contains;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjAnchor {
    Override,
    SysPrompt,
    DevMode,
    Jailbreak,
    DoAnything,
    Dan,
    Unrestricted,
    Persona,
}

/// Trigger phrases (lowercase, normalised): the searched literal, the part of the word
/// that precedes it (checked afterwards), how much of the literal belongs to the trigger,
/// and the kind. Literals avoid common English starts ("for", "pre", "you") so the SIMD
/// prefilter sees few false candidates.
pub(crate) const ANCHORS: &[(&str, &str, usize, InjAnchor)] = &[
    ("gnore", "i", 5, InjAnchor::Override),
    ("sregard", "di", 7, InjAnchor::Override),
    ("orget", "f", 5, InjAnchor::Override),
    ("verrid", "o", 6, InjAnchor::Override),
    ("ypass", "b", 5, InjAnchor::Override),
    ("prompt", "", 6, InjAnchor::SysPrompt),
    ("l instruction", "initia", 13, InjAnchor::SysPrompt),
    ("n instruction", "hidde", 13, InjAnchor::SysPrompt),
    ("loper mode", "deve", 10, InjAnchor::DevMode),
    ("lopermode", "deve", 9, InjAnchor::DevMode),
    ("ailbr", "j", 5, InjAnchor::Jailbreak),
    ("anything now", "do ", 12, InjAnchor::DoAnything),
    ("anythingnow", "do", 11, InjAnchor::DoAnything),
    ("dan ", "", 3, InjAnchor::Dan),
    ("dan,", "", 3, InjAnchor::Dan),
    ("dan.", "", 3, InjAnchor::Dan),
    ("nfiltered", "u", 9, InjAnchor::Unrestricted),
    ("ncensored", "u", 9, InjAnchor::Unrestricted),
    ("nrestricted", "u", 11, InjAnchor::Unrestricted),
    ("o restriction", "n", 13, InjAnchor::Unrestricted),
    ("t restriction", "withou", 13, InjAnchor::Unrestricted),
    ("retend", "p", 6, InjAnchor::Persona),
    ("u are now", "yo", 9, InjAnchor::Persona),
    ("act as", "", 6, InjAnchor::Persona),
    ("oleplay", "r", 7, InjAnchor::Persona),
    ("ole-play", "r", 8, InjAnchor::Persona),
    ("m now on", "fro", 8, InjAnchor::Persona),
];

const QUALIFIERS: &[&[u8]] = &[
    b"previous",
    b"prior",
    b"above",
    b"earlier",
    b"preceding",
    b"all",
    b"your",
    b"system",
    b"safety",
    b"any",
    b"every",
    b"those",
    b"these",
    b"original",
    b"initial",
    b"developer",
    b"the rest",
];
const OBJECTS: &[&[u8]] = &[
    b"instruction",
    b"direction",
    b"rule",
    b"prompt",
    b"guideline",
    b"context",
    b"restriction",
    b"polic",
    b"programming",
    b"guardrail",
    b"filter",
    b"constraint",
    b"command",
    b"directive",
    b"training",
];
const VERBS: &[&[u8]] = &[
    b"reveal",
    b"show",
    b"print",
    b"repeat",
    b"output",
    b"display",
    b"tell",
    b"leak",
    b"dump",
    b"give",
    b"what",
    b"write",
    b"share",
    b"disclose",
    b"expose",
    b"spill",
    b"copy",
    b"provide",
    b"recite",
    b"echo",
];
const LAWLESS: &[&[u8]] = &[
    b"unrestricted",
    b"unfiltered",
    b"uncensored",
    b"norestriction",
    b"withoutrestriction",
    b"nolimit",
    b"withoutlimit",
    b"norules",
    b"noguideline",
    b"nofilter",
    b"evil",
    b"anyrules",
    b"noethic",
    b"nomoral",
    b"jailbr",
    b"doanything",
];

/// One piece of evidence, with its span in the original text.
#[derive(Debug, Clone)]
pub(crate) struct Signal {
    pub kind: &'static str,
    pub span: Range<usize>,
    pub weight: f32,
}

/// Letters of `nt[from..to]` and where each came from.
fn letters(nt: &[u8], from: usize, to: usize) -> (Vec<u8>, Vec<usize>) {
    let to = to.min(nt.len());
    let mut l = Vec::with_capacity(to.saturating_sub(from));
    let mut pos = Vec::with_capacity(to.saturating_sub(from));
    for (i, &c) in nt.iter().enumerate().take(to).skip(from) {
        if c.is_ascii_alphabetic() {
            l.push(c);
            pos.push(i);
        }
    }
    (l, pos)
}

fn find_any(hay: &[u8], words: &[&[u8]]) -> Option<(usize, usize)> {
    words
        .iter()
        .filter_map(|w| memchr::memmem::find(hay, w).map(|i| (i, i + w.len())))
        .min()
}

/// Confirm one trigger at `nt[s..e]`; returns the kind, normalised span and weight.
pub(crate) fn confirm(
    nt: &[u8],
    s: usize,
    e: usize,
    a: InjAnchor,
    original_upper_dan: bool,
) -> Option<(&'static str, Range<usize>, f32)> {
    let word_start = s == 0 || !nt[s - 1].is_ascii_alphanumeric();
    let word_end = e >= nt.len() || !nt[e].is_ascii_alphanumeric();
    match a {
        InjAnchor::Override => {
            // Imperative only ("ignores the policy" describes, it does not instruct),
            // and within one clause.
            if !word_start || e < nt.len() && matches!(nt[e], b's' | b'd') {
                return None;
            }
            let stop = nt[e..(e + 90).min(nt.len())]
                .iter()
                .position(|c| matches!(c, b'.' | b',' | b';' | b'!' | b'?' | b'\n' | b'"'))
                .map_or((e + 90).min(nt.len()), |k| e + k);
            let (l, pos) = letters(nt, e, stop);
            let (qs, qe) = find_any(&l, QUALIFIERS)?;
            let (os, oe) = find_any(&l[qe..], OBJECTS)?;
            if qs > 12 || os > 25 {
                return None;
            }
            let end = pos[qe + oe - 1] + 1;
            // Extend to the end of the object word.
            let end = end
                + nt[end..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count();
            Some(("override", s..end, 0.9))
        }
        InjAnchor::SysPrompt => {
            if e - s == 6 {
                // Bare "prompt": only "system prompt", "initial prompt", …
                let (l, _) = letters(nt, s.saturating_sub(12), s);
                if ![
                    b"system".as_slice(),
                    b"initial",
                    b"hidden",
                    b"original",
                    b"secret",
                ]
                .iter()
                .any(|w| l.ends_with(w))
                {
                    return None;
                }
            }
            let (l, _) = letters(nt, s.saturating_sub(60), s);
            let w = if find_any(&l, VERBS).is_some() {
                0.8
            } else {
                0.2
            };
            Some(("system_prompt", s..e, w))
        }
        InjAnchor::DevMode => {
            let around = &nt[s.saturating_sub(60)..(e + 60).min(nt.len())];
            let w = if [
                b"enable".as_slice(),
                b"activat",
                b"enter",
                b"now in",
                b"switch",
            ]
            .iter()
            .any(|x| contains(around, x))
            {
                0.85
            } else {
                0.6
            };
            Some(("jailbreak", s..e, w))
        }
        InjAnchor::Jailbreak => Some(("jailbreak", s..e, 0.6)),
        InjAnchor::DoAnything => Some(("jailbreak", s..e, 0.85)),
        InjAnchor::Dan => {
            if !(word_start && word_end && original_upper_dan) {
                return None;
            }
            let (l, _) = letters(nt, s.saturating_sub(80), (e + 80).min(nt.len()));
            let near = [
                b"mode".as_slice(),
                b"youare",
                b"actas",
                b"jailbr",
                b"anything",
                b"pretend",
                b"character",
                b"nowon",
            ];
            let w = if near.iter().any(|x| contains(&l, x)) {
                0.75
            } else {
                0.2
            };
            Some(("jailbreak", s..e, w))
        }
        InjAnchor::Unrestricted => word_start.then_some(("roleplay", s..e, 0.3)),
        InjAnchor::Persona => {
            if !word_start {
                return None;
            }
            let (l, pos) = letters(nt, e, e + 120);
            match find_any(&l, LAWLESS) {
                Some((_, le)) => {
                    let end = pos[le - 1] + 1;
                    let end = end
                        + nt[end..]
                            .iter()
                            .take_while(|c| c.is_ascii_alphabetic())
                            .count();
                    Some(("roleplay", s..end, 0.7))
                }
                None => Some(("roleplay", s..e, 0.25)),
            }
        }
    }
}

/// Combine signals: the strongest of each kind counts.
pub(crate) fn score(signals: &[Signal]) -> f32 {
    let mut best: Vec<(&str, f32)> = Vec::new();
    for s in signals {
        match best.iter_mut().find(|(k, _)| *k == s.kind) {
            Some((_, w)) => *w = w.max(s.weight),
            None => best.push((s.kind, s.weight)),
        }
    }
    let keep = best
        .iter()
        .fold(1.0f32, |acc, (_, w)| acc * (1.0 - w.clamp(0.0, 1.0)));
    (1.0 - keep).clamp(0.0, 1.0)
}
