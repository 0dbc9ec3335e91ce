use super::*;
use crate::checkpoint::CheckpointSigner;
use crate::crypto::DataKey;
use crate::receipt::{
    ChainHead, Finding, PolicyRef, ReceiptKind, ToolDecision, ToolDirection, format_created_at,
    new_receipt_id,
};
use aws_lc_rs::test::rand::FixedByteRandom;
use proptest::prelude::*;
use serde_json::json;

const T0: u64 = 1_738_324_800_000;

fn receipt(tenant: &str, i: u64) -> Receipt {
    let id = new_receipt_id(
        T0 + i,
        &FixedByteRandom {
            byte: u8::try_from(i % 251).unwrap(),
        },
    )
    .unwrap();
    let mut r = Receipt::new(
        id,
        tenant,
        ReceiptKind::Message,
        format_created_at(T0 + i),
        "allow",
    );
    r.model = Some("claude-sonnet-4-5".into());
    r.input_tokens = Some(10 + i);
    r.request_id = Some(format!("req-{i}"));
    r
}

/// A sealed chain of `n` receipts for `tenant`.
fn chain(tenant: &str, n: u64) -> Vec<Receipt> {
    let mut head = ChainHead::genesis();
    (1..=n)
        .map(|i| {
            let mut r = receipt(tenant, i);
            head = r.seal_into_chain(&head).unwrap();
            r
        })
        .collect()
}

fn kinds(report: &VerifyReport) -> Vec<(ProblemKind, Option<u64>)> {
    report.problems.iter().map(|p| (p.kind, p.seq)).collect()
}

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed(&[42; 32]).unwrap()
}

#[test]
fn intact_chain_verifies() {
    let c = chain("acme", 5);
    let r = verify_chain("acme", &c, None);
    assert!(r.ok, "{r:#?}");
    assert_eq!((r.receipts, r.first_seq, r.last_seq), (5, Some(1), Some(5)));
    assert_eq!(r.head_hash.as_deref(), Some(c[4].hash.as_str()));
    assert!(verify_chain("acme", Vec::<Receipt>::new(), None).ok);
}

#[test]
fn modified_field_is_reported_at_its_receipt() {
    let mut c = chain("acme", 5);
    c[2].decision = "deny".into();
    let r = verify_chain("acme", &c, None);
    assert_eq!(kinds(&r), [(ProblemKind::HashMismatch, Some(3))]);
    assert_eq!(r.problems[0].receipt_id.as_deref(), Some(c[2].id.as_str()));
    assert_eq!(r.problems[0].position, Some(3));
}

#[test]
fn modified_and_rehashed_receipt_breaks_the_next_link() {
    let mut c = chain("acme", 5);
    c[2].decision = "deny".into();
    c[2].hash = c[2].compute_hash().unwrap();
    let r = verify_chain("acme", &c, None);
    assert_eq!(kinds(&r), [(ProblemKind::PrevHashMismatch, Some(4))]);
}

#[test]
fn deletion_in_the_middle_and_at_the_start() {
    let mut c = chain("acme", 6);
    c.remove(3);
    let r = verify_chain("acme", &c, None);
    assert_eq!(kinds(&r), [(ProblemKind::Missing, Some(4))]);
    assert_eq!(
        r.problems[0].receipt_id.as_deref(),
        Some(c[3].id.as_str()),
        "names the receipt after the gap"
    );
    c.drain(0..2);
    let r = verify_chain("acme", &c, None);
    assert_eq!(
        kinds(&r),
        [
            (ProblemKind::Missing, Some(1)),
            (ProblemKind::Missing, Some(4))
        ]
    );
    assert!(r.problems[0].detail.contains("1..=2"));
}

#[test]
fn truncation_is_caught_only_by_a_checkpoint() {
    let mut c = chain("acme", 5);
    let s = signer();
    let cp = s.sign("acme", 5, &c[4].hash, &c[4].created_at).unwrap();
    c.truncate(3);
    assert!(
        verify_chain("acme", &c, None).ok,
        "an unsigned chain cannot know its end"
    );
    let pk = s.public_key();
    let r = verify_chain_with_checkpoints("acme", &c, None, vec![cp], &[&pk]);
    assert_eq!(kinds(&r), [(ProblemKind::CheckpointBeyondChain, Some(5))]);
}

#[test]
fn insertion_is_reported() {
    let c = chain("acme", 4);
    // A fabricated receipt claiming seq 3, correctly hashed and linked to seq 2.
    let mut fake = receipt("acme", 99);
    fake.decision = "allow".into();
    fake.seal_into_chain(&c[1].head()).unwrap();
    let mut tampered = c.clone();
    tampered.insert(2, fake.clone());
    let r = verify_chain("acme", &tampered, None);
    // The fake takes seq 3's place; the genuine seq 3 is the duplicate and seq 4 links
    // to it (a fork), so the report names both ids at seq 3 and nothing else.
    assert_eq!(kinds(&r), [(ProblemKind::DuplicateSeq, Some(3))]);
    assert!(r.problems[0].detail.contains(&fake.id) && r.problems[0].detail.contains(&c[2].id));

    // Inserted without renumbering anything: seq collides and linkage breaks.
    let mut fake2 = receipt("acme", 98);
    fake2.seq = 3;
    fake2.prev_hash = ZERO_HASH.into();
    fake2.hash = fake2.compute_hash().unwrap();
    let mut tampered = c;
    tampered.insert(3, fake2);
    let r = verify_chain("acme", &tampered, None);
    assert_eq!(kinds(&r), [(ProblemKind::DuplicateSeq, Some(3))]);
}

#[test]
fn reordering_is_reported() {
    let mut c = chain("acme", 5);
    c.swap(1, 2);
    let r = verify_chain("acme", &c, None);
    assert_eq!(kinds(&r), [(ProblemKind::OutOfOrder, Some(2))]);
    assert_eq!(r.problems[0].position, Some(3));

    // Swapping the seq numbers themselves (what an UPDATE would do) changes content.
    let mut c = chain("acme", 5);
    c[1].seq = 3;
    c[2].seq = 2;
    c.swap(1, 2);
    let r = verify_chain("acme", &c, None);
    assert!(
        r.problems
            .iter()
            .filter(|p| p.kind == ProblemKind::HashMismatch)
            .count()
            == 2,
        "{r:#?}"
    );
}

#[test]
fn receipts_of_another_tenant_are_rejected() {
    let a = chain("acme", 4);
    let b = chain("beta", 4);
    // B's receipt slipped into A's stream.
    let mut mixed = a.clone();
    mixed.insert(2, b[2].clone());
    let r = verify_chain("acme", &mixed, None);
    assert_eq!(kinds(&r), [(ProblemKind::WrongTenant, Some(3))]);
    assert_eq!(r.problems[0].receipt_id.as_deref(), Some(b[2].id.as_str()));

    // A's receipt relabelled as B's: A misses it, B sees a modified duplicate.
    let mut moved = a[2].clone();
    moved.tenant_id = "beta".into();
    let r = verify_chain("acme", [&a[0], &a[1], &a[3]], None);
    assert_eq!(kinds(&r), [(ProblemKind::Missing, Some(3))]);
    let mut b2 = b.clone();
    b2.insert(3, moved);
    let r = verify_chain("beta", &b2, None);
    assert_eq!(
        kinds(&r),
        [
            (ProblemKind::HashMismatch, Some(3)),
            (ProblemKind::DuplicateSeq, Some(3))
        ]
    );
}

#[test]
fn forged_checkpoints_and_rewritten_chains() {
    let c = chain("acme", 5);
    let s = signer();
    let pk = s.public_key();
    let good = s.sign("acme", 3, &c[2].hash, &c[2].created_at).unwrap();

    let r = verify_chain_with_checkpoints("acme", &c, None, vec![good.clone()], &[&pk]);
    assert!(r.ok && r.checkpoints_verified == 1, "{r:#?}");

    // Altered after signing.
    let mut altered = good.clone();
    altered.checkpoint.seq = 4;
    // Signed by someone else.
    let mallory = CheckpointSigner::from_seed(&[1; 32]).unwrap();
    let forged = mallory
        .sign("acme", 4, &c[3].hash, &c[3].created_at)
        .unwrap();
    // Another tenant's checkpoint.
    let other = s.sign("beta", 2, &c[1].hash, &c[1].created_at).unwrap();
    let r = verify_chain_with_checkpoints("acme", &c, None, vec![altered, forged, other], &[&pk]);
    assert_eq!(
        kinds(&r),
        [
            (ProblemKind::CheckpointWrongTenant, Some(2)),
            (ProblemKind::CheckpointBadSignature, Some(4)),
            (ProblemKind::CheckpointUnknownKey, Some(4)),
        ]
    );

    // Whoever can write the store rewrites the whole chain consistently: linkage is
    // fine, only the signed checkpoint exposes it.
    let mut head = c[0].head();
    let rewritten: Vec<Receipt> = std::iter::once(c[0].clone())
        .chain(c[1..].iter().map(|r| {
            let mut r = r.clone();
            r.decision = "deny".into();
            head = r.seal_into_chain(&head).unwrap();
            r
        }))
        .collect();
    assert!(verify_chain("acme", &rewritten, None).ok);
    let r = verify_chain_with_checkpoints("acme", &rewritten, None, vec![good], &[&pk]);
    assert_eq!(kinds(&r), [(ProblemKind::CheckpointMismatch, Some(3))]);

    // Without a key, checkpoints still match heads but the report says signatures were not checked.
    let unsigned = s.sign("acme", 2, &c[1].hash, &c[1].created_at).unwrap();
    let r = verify_chain_with_checkpoints("acme", &c, None, vec![unsigned], &[]);
    assert!(r.ok && !r.checkpoint_signatures_checked && r.checkpoints_verified == 1);
}

#[test]
fn purged_chain_verifies_from_its_anchor() {
    let c = chain("acme", 6);
    let anchor = Anchor {
        tenant_id: "acme".into(),
        seq: 2,
        head_hash: c[1].hash.clone(),
    };
    let kept = &c[2..];
    let r = verify_chain("acme", kept, Some(anchor.clone()));
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.anchor_seq, Some(2));

    assert_eq!(
        kinds(&verify_chain("acme", kept, None)),
        [(ProblemKind::Missing, Some(1))]
    );
    let wrong = Anchor {
        head_hash: c[0].hash.clone(),
        ..anchor.clone()
    };
    assert_eq!(
        kinds(&verify_chain("acme", kept, Some(wrong))),
        [(ProblemKind::PrevHashMismatch, Some(3))]
    );
    let r = verify_chain("acme", &c[1..], Some(anchor.clone()));
    assert_eq!(kinds(&r), [(ProblemKind::BeforeAnchor, Some(2))]);

    // A checkpoint at the anchor's seq proves the anchor.
    let s = signer();
    let pk = s.public_key();
    let cp = s.sign("acme", 2, &c[1].hash, &c[1].created_at).unwrap();
    let r = verify_chain_with_checkpoints(
        "acme",
        kept,
        Some(Anchor::from(&cp.checkpoint)),
        vec![cp],
        &[&pk],
    );
    assert!(r.ok && r.checkpoints_verified == 1, "{r:#?}");
}

#[test]
fn shredded_payloads_still_verify() {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let dk = DataKey::generate(&rng).unwrap();
    let mut head = ChainHead::genesis();
    let c: Vec<Receipt> = (1..=3)
        .map(|i| {
            let mut r = receipt("acme", i);
            r.seal_sensitive(
                &dk,
                &json!({"prompt": format!("redacted prompt {i}")}),
                &rng,
            )
            .unwrap();
            head = r.seal_into_chain(&head).unwrap();
            r
        })
        .collect();
    // The store deleted the wrapped data key: `dk` is gone for good.
    let _ = dk;
    let other = DataKey::generate(&rng).unwrap();
    assert!(c.iter().all(|r| r.open_sensitive(&other).is_err()));
    assert!(verify_chain("acme", &c, None).ok);
}

fn export_lines(a: &[Receipt], b: &[Receipt], extra: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for (x, y) in a.iter().zip(b) {
        lines.push(export_receipt_line(x).unwrap());
        lines.push(export_receipt_line(y).unwrap());
    }
    lines.extend(extra.iter().cloned());
    lines
}

#[test]
fn export_round_trip_with_checkpoints_and_anchor() {
    let a = chain("acme", 4);
    let b = chain("beta", 4);
    let s = signer();
    let pk = s.public_key();
    let extra = vec![
        export_checkpoint_line(
            &s.sign("acme", 4, &a[3].hash, "2025-01-31T13:00:00.000Z")
                .unwrap(),
        )
        .unwrap(),
        export_checkpoint_line(
            &s.sign("beta", 2, &b[1].hash, "2025-01-31T13:00:00.000Z")
                .unwrap(),
        )
        .unwrap(),
    ];
    let lines = export_lines(&a, &b, &extra);
    let r = verify_export(&lines, &[&pk]);
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.lines, 10);
    assert_eq!(
        r.tenants
            .iter()
            .map(|t| (t.tenant_id.as_str(), t.checkpoints_verified))
            .collect::<Vec<_>>(),
        [("acme", 1), ("beta", 1)]
    );

    // Anchor line after the receipts it anchors: still fine.
    let anchor = Anchor {
        tenant_id: "acme".into(),
        seq: 1,
        head_hash: a[0].hash.clone(),
    };
    let mut lines = export_lines(&a[1..], &b[1..], &[]);
    lines.push(export_anchor_line(&anchor).unwrap());
    let r = verify_export(&lines, &[]);
    assert_eq!(r.tenants[0].problems, []);
    assert_eq!(kinds(&r.tenants[1]), [(ProblemKind::Missing, Some(1))]);
}

#[test]
fn export_reports_line_numbers_and_unknown_members() {
    let a = chain("acme", 3);
    let b = chain("beta", 3);
    let mut lines = export_lines(&a, &b, &[]);
    // Line 3 is acme seq 2: edit its text directly.
    lines[2] = lines[2].replace("\"allow\"", "\"deny\"");
    // Line 6 is beta seq 3: add a member the crate does not know; it is hashed too.
    let mut v: Value = serde_json::from_str(&lines[5]).unwrap();
    v["note"] = json!("added later");
    lines[5] = v.to_string();
    lines.insert(1, "{not json".into());
    lines.push(String::new());
    lines.push(r#"{"record":"mystery"}"#.into());
    let r = verify_export(&lines, &[]);
    assert!(!r.ok);
    assert_eq!(
        r.problems.iter().map(|p| p.position).collect::<Vec<_>>(),
        [Some(2), Some(9)]
    );
    let acme = &r.tenants[0];
    assert_eq!(kinds(acme), [(ProblemKind::HashMismatch, Some(2))]);
    assert_eq!(acme.problems[0].position, Some(4));
    assert_eq!(kinds(&r.tenants[1]), [(ProblemKind::HashMismatch, Some(3))]);
    assert_eq!(r.tenants[1].problems[0].position, Some(7));
}

#[test]
fn floats_smuggled_into_an_export_are_not_canonical() {
    let a = chain("acme", 2);
    let mut v = serde_json::to_value(&a[1]).unwrap();
    v["details"] = json!({"score": 0.5});
    let lines = [export_receipt_line(&a[0]).unwrap(), v.to_string()];
    let r = verify_export(lines, &[]);
    assert_eq!(kinds(&r.tenants[0]), [(ProblemKind::NotCanonical, Some(2))]);
}

#[test]
fn snapshot_of_a_tampered_chain_report() {
    let mut c = chain("acme", 9);
    let s = signer();
    let pk = s.public_key();
    let cp_ok = s
        .sign("acme", 2, &c[1].hash, "2025-01-31T13:00:00.000Z")
        .unwrap();
    let cp_end = s
        .sign("acme", 9, &c[8].hash, "2025-01-31T13:00:00.000Z")
        .unwrap();
    c[1].model = Some("claude-opus".into()); // modified, not rehashed
    c.remove(4); // seq 5 deleted
    c.swap(5, 6); // seq 7 and 8 reordered
    c.truncate(7); // seq 9 cut off
    let foreign = chain("beta", 3).remove(2);
    c.push(foreign);
    let report = verify_chain_with_checkpoints("acme", &c, None, vec![cp_ok, cp_end], &[&pk]);
    insta::assert_yaml_snapshot!(report);
}

// ---- property: any single-field modification of any receipt is detected ----

type Mutator = fn(&mut Receipt);

fn flip(s: &mut String) {
    if s.pop() == Some('x') {
        s.push('y');
    } else {
        s.push('x');
    }
}
fn flip_hex(s: &mut String) {
    let first = if s.starts_with('0') { "1" } else { "0" };
    s.replace_range(..1, first);
}
fn opt_s(o: &mut Option<String>) {
    match o {
        Some(s) => flip(s),
        None => *o = Some("x".into()),
    }
}
fn opt_n(o: &mut Option<u64>) {
    *o = Some(o.map_or(1, |n| n ^ 1));
}

const MUTATORS: &[(&str, Mutator)] = &[
    ("id", |r| flip(&mut r.id)),
    ("tenant_id", |r| flip(&mut r.tenant_id)),
    ("seq", |r| r.seq += 1),
    ("prev_hash", |r| flip_hex(&mut r.prev_hash)),
    ("hash", |r| flip_hex(&mut r.hash)),
    ("schema_version", |r| r.schema_version = 2),
    ("created_at", |r| {
        r.created_at = r.created_at.replace(".0", ".9")
    }),
    ("kind", |r| {
        r.kind = if r.kind == ReceiptKind::Alert {
            ReceiptKind::Scan
        } else {
            ReceiptKind::Alert
        }
    }),
    ("key_id", |r| opt_s(&mut r.key_id)),
    ("user_id", |r| opt_s(&mut r.user_id)),
    ("request_id", |r| opt_s(&mut r.request_id)),
    ("model", |r| opt_s(&mut r.model)),
    ("decision", |r| flip(&mut r.decision)),
    ("reason_code", |r| opt_s(&mut r.reason_code)),
    ("upstream_status", |r| {
        r.upstream_status = Some(r.upstream_status.map_or(200, |s| s ^ 1))
    }),
    ("upstream_request_id", |r| opt_s(&mut r.upstream_request_id)),
    ("input_tokens", |r| opt_n(&mut r.input_tokens)),
    ("output_tokens", |r| opt_n(&mut r.output_tokens)),
    ("stop_reason", |r| opt_s(&mut r.stop_reason)),
    ("latency_ms", |r| opt_n(&mut r.latency_ms)),
    ("prompt_hmac", |r| opt_s(&mut r.prompt_hmac)),
    ("output_hmac", |r| opt_s(&mut r.output_hmac)),
    ("client_addr", |r| opt_s(&mut r.client_addr)),
    ("policy", |r| match &mut r.policy {
        Some(p) => opt_s(&mut p.rule_id),
        None => r.policy = Some(PolicyRef::default()),
    }),
    ("findings", |r| match r.findings.first_mut() {
        Some(f) => f.count += 1,
        None => r.findings.push(Finding {
            entity: "email".into(),
            count: 1,
            action: "redact".into(),
        }),
    }),
    ("tools", |r| match r.tools.first_mut() {
        Some(t) => {
            t.direction = if t.direction == ToolDirection::Called {
                ToolDirection::Result
            } else {
                ToolDirection::Called
            }
        }
        None => r.tools.push(ToolDecision {
            tool: "t".into(),
            decision: "deny".into(),
            rule_id: None,
            direction: ToolDirection::Called,
        }),
    }),
    ("approval_id", |r| opt_s(&mut r.approval_id)),
    ("admin", |r| match &mut r.admin {
        Some(a) => flip(&mut a.object),
        None => {
            r.admin = Some(crate::receipt::AdminChange {
                actor: "a".into(),
                object: "o".into(),
                change: Value::Null,
            })
        }
    }),
    ("details", |r| {
        r.details = if r.details.is_null() {
            json!({"k": 1})
        } else {
            Value::Null
        }
    }),
    ("sealed", |r| match &mut r.sealed {
        Some(s) => flip(&mut s.ciphertext_b64),
        None => {
            r.sealed = Some(crate::crypto::Sealed {
                alg: "A256GCM".into(),
                nonce_b64: "AAAA".into(),
                ciphertext_b64: "AAAA".into(),
            })
        }
    }),
];

#[test]
fn mutators_cover_every_field() {
    let v = serde_json::to_value(receipt("acme", 1)).unwrap();
    let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut covered: Vec<&str> = MUTATORS.iter().map(|(n, _)| *n).collect();
    fields.sort_unstable();
    covered.sort_unstable();
    assert_eq!(fields, covered);
}

type Fields = (
    Option<String>,
    Option<u64>,
    Option<u16>,
    Vec<(String, u64)>,
    bool,
    String,
);

fn arb_receipt_fields() -> impl Strategy<Value = Fields> {
    (
        proptest::option::of("[a-z0-9\u{e9}\u{1f600}\"\\\\ ]{0,12}"),
        proptest::option::of(0u64..1_000_000),
        proptest::option::of(100u16..600),
        proptest::collection::vec(("[a-z_]{1,8}", 0u64..50), 0..3),
        any::<bool>(),
        "(allow|deny|redact|error)",
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_single_field_modification_is_detected(
        fields in proptest::collection::vec(arb_receipt_fields(), 1..8),
        pick in any::<prop::sample::Index>(),
        which in 0..MUTATORS.len(),
    ) {
        let mut head = ChainHead::genesis();
        let mut c = Vec::new();
        for (i, (user, tokens, status, findings, tool, decision)) in fields.into_iter().enumerate() {
            let mut r = receipt("acme", i as u64 + 1);
            r.user_id = user;
            r.output_tokens = tokens;
            r.upstream_status = status;
            r.decision = decision;
            r.findings = findings.into_iter().map(|(entity, count)| Finding { entity, count, action: "flag".into() }).collect();
            if tool {
                r.tools.push(ToolDecision { tool: "fs.read".into(), decision: "allow".into(), rule_id: Some("r1".into()), direction: ToolDirection::Offered });
            }
            head = r.seal_into_chain(&head).unwrap();
            c.push(r);
        }
        prop_assert!(verify_chain("acme", &c, None).ok);
        let i = pick.index(c.len());
        let (orig_id, orig_seq) = (c[i].id.clone(), c[i].seq);
        let before = c[i].clone();
        (MUTATORS[which].1)(&mut c[i]);
        prop_assert_ne!(&before, &c[i], "mutator {} did nothing", MUTATORS[which].0);
        let r = verify_chain("acme", &c, None);
        prop_assert!(!r.ok, "{} not detected", MUTATORS[which].0);
        prop_assert!(
            r.problems.iter().any(|p| p.seq == Some(orig_seq) || p.receipt_id.as_deref() == Some(orig_id.as_str())),
            "{}: wrong place {:#?}", MUTATORS[which].0, r.problems
        );

        // Same tampering on the exported text: reported at that line.
        let mut lines: Vec<String> = c.iter().map(|r| export_receipt_line(r).unwrap()).collect();
        lines[i] = export_receipt_line(&c[i]).unwrap();
        let e = verify_export(&lines, &[]);
        prop_assert!(!e.ok);
        let line = i as u64 + 1;
        prop_assert!(
            e.tenants.iter().flat_map(|t| &t.problems).chain(&e.problems).any(|p| p.position == Some(line)),
            "{}: no problem at line {line}: {e:#?}", MUTATORS[which].0
        );
    }

    #[test]
    fn any_raw_member_edit_in_an_export_is_detected(
        n in 1u64..6,
        pick in any::<prop::sample::Index>(),
        member in any::<prop::sample::Index>(),
        delete in any::<bool>(),
    ) {
        let c = chain("acme", n);
        let mut lines: Vec<String> = c.iter().map(|r| export_receipt_line(r).unwrap()).collect();
        let i = pick.index(lines.len());
        let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
        let obj = v.as_object_mut().unwrap();
        let key = obj.keys().nth(member.index(obj.len())).unwrap().clone();
        if delete {
            obj.remove(&key);
        } else {
            let new = match &obj[&key] {
                Value::String(s) => Value::String(format!("{s}x")),
                Value::Number(x) => json!(x.as_u64().unwrap() + 1),
                Value::Null => json!("x"),
                Value::Array(a) => { let mut a = a.clone(); a.push(json!(1)); Value::Array(a) }
                Value::Object(_) | Value::Bool(_) => Value::Null,
            };
            obj.insert(key.clone(), new);
        }
        lines[i] = v.to_string();
        let e = verify_export(&lines, &[]);
        let line = i as u64 + 1;
        prop_assert!(!e.ok);
        prop_assert!(
            e.tenants.iter().flat_map(|t| &t.problems).chain(&e.problems).any(|p| p.position == Some(line)),
            "{key} (delete={delete}): {e:#?}"
        );
    }
}

#[test]
fn golden_receipt_hash() {
    // Cross-checked with the independent Python verifier in docs/receipts.md.
    let r = &chain("acme", 1)[0];
    assert_eq!(
        r.hash,
        "efcd148ffb654e6395c289d65ed77c191fe1a7760229df3f8088b1cb8d0eb790"
    );
}
