//! Simulation: synthetic tenants with a daily rhythm, then a spike of each kind.
//! Run with `--nocapture` to see measured delays and the false-alert count; README.md
//! records them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_sentinel::*;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
/// Simulations start on a fixed day (not at 0, so day arithmetic is exercised).
const T0: u64 = 1_750_000_000_000 - 1_750_000_000_000 % DAY;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda < 30.0 {
            let l = (-lambda).exp();
            let (mut k, mut p) = (0u64, 1.0);
            loop {
                p *= self.f();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
        // Normal approximation (Box-Muller).
        let u1 = self.f().max(1e-12);
        let u2 = self.f();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (lambda + z * lambda.sqrt()).round().max(0.0) as u64
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Spike {
    None,
    Rate(f64),
    InputTokens,
    OutputTokens,
    Deny,
    Block,
    Pii,
    Secrets,
    Injection,
    UpstreamErrors,
    Spend,
    HugePrompt,
}

#[derive(Clone)]
struct Profile {
    name: String,
    /// Requests per minute at the daily peak.
    peak: f64,
    /// Hour offset of the tenant's day (tenants sit in different time zones).
    phase_h: f64,
}

impl Profile {
    fn rate(&self, t: u64) -> f64 {
        let day_frac = ((t % DAY) as f64 / DAY as f64) + self.phase_h / 24.0;
        // Trough at 10% of peak, peak mid-day.
        let shape = 0.55 - 0.45 * (2.0 * std::f64::consts::PI * day_frac).cos();
        self.peak * shape
    }
}

fn requests(rng: &mut Rng, p: &Profile, minute_start: u64, spike: Spike) -> Vec<Observation> {
    let mut lambda = p.rate(minute_start);
    if let Spike::Rate(f) = spike {
        lambda *= f;
    }
    let n = rng.poisson(lambda);
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let user = rng.range(0, 9);
        let mut o = Observation {
            tenant: p.name.clone(),
            user: Some(format!("u{user}")),
            key: Some(format!("k{}", user % 3)),
            tools: if rng.chance(0.3) {
                vec![format!("tool{}", rng.range(0, 2))]
            } else {
                Vec::new()
            },
            at_ms: minute_start + rng.range(0, MIN - 1),
            input_tokens: rng.range(200, 1800),
            output_tokens: rng.range(100, 500),
            denied: rng.chance(0.02),
            blocked: rng.chance(0.01),
            pii: u64::from(rng.chance(0.05)),
            secrets: u64::from(rng.chance(0.005)),
            injection: u64::from(rng.chance(0.005)),
            upstream_error: rng.chance(0.01),
        };
        match spike {
            Spike::InputTokens => o.input_tokens *= 4,
            Spike::OutputTokens => o.output_tokens *= 6,
            Spike::Deny => o.denied = rng.chance(0.5),
            Spike::Block => o.blocked = rng.chance(0.3),
            Spike::Pii => o.pii = u64::from(rng.chance(0.5)),
            Spike::Secrets => o.secrets = u64::from(rng.chance(0.2)),
            Spike::Injection => o.injection = u64::from(rng.chance(0.2)),
            Spike::UpstreamErrors => o.upstream_error = rng.chance(0.3),
            Spike::Spend => {
                o.input_tokens *= 3;
                o.output_tokens *= 3;
            }
            _ => {}
        }
        v.push(o);
    }
    if spike == Spike::HugePrompt && !v.is_empty() {
        v[0].input_tokens = 25_000;
    }
    v.sort_by_key(|o| o.at_ms);
    v
}

/// Runs `minutes` of traffic for every profile from `start`; `spike` applies to the
/// first profile from `spike_at` on. Returns every alert.
fn simulate(
    s: &mut Sentinel,
    rng: &mut Rng,
    profiles: &[Profile],
    start: u64,
    minutes: u64,
    spike: Spike,
    spike_at: u64,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for m in 0..minutes {
        let t = start + m * MIN;
        let mut batch = Vec::new();
        for (i, p) in profiles.iter().enumerate() {
            let sp = if i == 0 && t >= spike_at {
                spike
            } else {
                Spike::None
            };
            batch.extend(requests(rng, p, t, sp));
        }
        batch.sort_by_key(|o| o.at_ms);
        for o in &batch {
            alerts.extend(s.observe(o));
        }
        alerts.extend(s.tick(t + MIN));
    }
    alerts
}

fn profiles() -> Vec<Profile> {
    vec![
        Profile {
            name: "acme".into(),
            peak: 120.0,
            phase_h: 0.0,
        },
        Profile {
            name: "globex".into(),
            peak: 60.0,
            phase_h: 8.0,
        },
        Profile {
            name: "initech".into(),
            peak: 300.0,
            phase_h: 15.0,
        },
    ]
}

fn sentinel() -> Sentinel {
    let mut s = Sentinel::new(SentinelConfig::default());
    s.set_budget("acme", Some(400_000_000));
    s
}

#[test]
fn steady_daily_rhythm_never_alerts() {
    let mut s = sentinel();
    let mut rng = Rng(7);
    let ps = profiles();
    // Three simulated days, three tenants, every subject series on.
    let days = 3;
    let alerts = simulate(
        &mut s,
        &mut rng,
        &ps,
        T0,
        days * 24 * 60,
        Spike::None,
        u64::MAX,
    );
    let evaluations = days * 24 * 60 * (s.series_count() as u64) * 10;
    println!(
        "steady: {} alerts over {days} days, {} series, ~{evaluations} detector evaluations",
        alerts.len(),
        s.series_count()
    );
    for a in &alerts {
        println!("  false alert: {} {}", a.dedup_key, a.message);
    }
    assert!(alerts.is_empty(), "false alerts on the steady baseline");
}

/// Warm up a day, then spike `acme` at 10:00 of day 2 (on the morning ramp) for
/// `minutes`; returns (delay of the first matching alert, all alerts).
fn spike_run(spike: Spike, minutes: u64, seed: u64) -> Vec<Alert> {
    let mut s = sentinel();
    let mut rng = Rng(seed);
    let ps = profiles();
    let warm = simulate(&mut s, &mut rng, &ps, T0, 24 * 60, Spike::None, u64::MAX);
    assert!(warm.is_empty(), "alerts during warm-up day: {warm:?}");
    let at = T0 + DAY + 10 * HOUR;
    let before = simulate(
        &mut s,
        &mut rng,
        &ps,
        T0 + DAY,
        10 * 60,
        Spike::None,
        u64::MAX,
    );
    assert!(before.is_empty(), "alerts before the spike: {before:?}");
    let during = simulate(&mut s, &mut rng, &ps, at, minutes, spike, at);
    for a in &during {
        assert_eq!(
            a.tenant, "acme",
            "spike in acme alerted {}: {a:?}",
            a.tenant
        );
    }
    during
}

fn first_delay(alerts: &[Alert], signal: Signal, kinds: &[DetectorKind]) -> Option<u64> {
    let at = T0 + DAY + 10 * HOUR;
    alerts
        .iter()
        .filter(|a| a.subject == Subject::Tenant && a.signal == signal)
        .filter(|a| kinds.contains(&a.detector))
        .map(|a| a.at_ms.saturating_sub(at))
        .min()
}

#[test]
fn each_spike_kind_alerts_its_tenant_within_the_stated_delay() {
    use DetectorKind::*;
    // (spike, signal, detectors accepted, max delay in minutes)
    let cases: Vec<(Spike, Signal, Vec<DetectorKind>, u64)> = vec![
        (Spike::Rate(4.0), Signal::RequestRate, vec![Ewma], 2),
        (Spike::InputTokens, Signal::InputTokens, vec![Ewma], 2),
        (Spike::OutputTokens, Signal::OutputTokens, vec![Ewma], 2),
        (Spike::Deny, Signal::DenyRate, vec![Ewma], 2),
        (Spike::Deny, Signal::DenyRate, vec![DenyRateRule], 3),
        (Spike::Block, Signal::BlockRate, vec![Ewma, CusumUp], 3),
        (Spike::Pii, Signal::PiiRate, vec![Ewma, CusumUp], 3),
        (Spike::Secrets, Signal::SecretRate, vec![Ewma, CusumUp], 3),
        (
            Spike::Injection,
            Signal::InjectionRate,
            vec![Ewma, CusumUp],
            3,
        ),
        (
            Spike::UpstreamErrors,
            Signal::UpstreamErrorRate,
            vec![Ewma, CusumUp],
            3,
        ),
        (Spike::Spend, Signal::Spend, vec![Ewma], 2),
        // A moderate sustained rise (+60%): under the z threshold, the CUSUM's job.
        (
            Spike::Rate(1.6),
            Signal::RequestRate,
            vec![CusumUp, Ewma],
            10,
        ),
        // Traffic collapse: the lower CUSUM.
        (Spike::Rate(0.3), Signal::RequestRate, vec![CusumDown], 10),
    ];
    for (i, (spike, signal, kinds, max_min)) in cases.into_iter().enumerate() {
        let alerts = spike_run(spike, 30, 100 + i as u64);
        let d = first_delay(&alerts, signal, &kinds);
        println!(
            "{spike:?}: {signal:?} by {kinds:?} after {:?} min ({} alerts in 30 min)",
            d.map(|d| d as f64 / MIN as f64),
            alerts.len()
        );
        let d = d.unwrap_or_else(|| panic!("{spike:?}: no {signal:?} alert: {alerts:?}"));
        assert!(d <= max_min * MIN, "{spike:?}: took {d} ms");
    }
}

#[test]
fn moderate_shift_is_caught_by_cusum_not_by_ewma() {
    let alerts = spike_run(Spike::Rate(1.6), 30, 42);
    let kinds: Vec<_> = alerts
        .iter()
        .filter(|a| a.subject == Subject::Tenant && a.signal == Signal::RequestRate)
        .map(|a| a.detector)
        .collect();
    println!("moderate shift: {kinds:?}");
    assert!(kinds.contains(&DetectorKind::CusumUp));
}

#[test]
fn huge_prompt_alerts_at_once_and_budget_thresholds_fire_once() {
    let alerts = spike_run(Spike::HugePrompt, 3, 9);
    let p: Vec<_> = alerts
        .iter()
        .filter(|a| a.detector == DetectorKind::PromptTokens)
        .collect();
    assert!(!p.is_empty());
    assert!(p[0].at_ms - (T0 + DAY + 10 * HOUR) < MIN);
    assert!(matches!(p[0].subject, Subject::User(_)));

    let mut s = Sentinel::new(SentinelConfig::default());
    s.set_budget("t", Some(10_000));
    let mut fired = Vec::new();
    for i in 0..30 {
        fired.extend(s.observe(&Observation {
            tenant: "t".into(),
            at_ms: T0 + i * 1000,
            input_tokens: 500,
            ..Default::default()
        }));
    }
    let budget: Vec<_> = fired
        .iter()
        .filter(|a| a.detector == DetectorKind::Budget)
        .map(|a| a.score)
        .collect();
    assert_eq!(budget.len(), 3, "{fired:?}");
    // A new day re-arms the thresholds.
    let next = s.observe(&Observation {
        tenant: "t".into(),
        at_ms: T0 + DAY,
        input_tokens: 6_000,
        ..Default::default()
    });
    assert_eq!(next.len(), 1);
}

#[test]
fn cooldown_deduplicates() {
    let mut s = Sentinel::new(SentinelConfig::default());
    let mut n = 0;
    for i in 0..100 {
        n += s
            .observe(&Observation {
                tenant: "t".into(),
                at_ms: T0 + i * 1000,
                input_tokens: 50_000,
                ..Default::default()
            })
            .len();
    }
    assert_eq!(n, 1);
    let later = s.observe(&Observation {
        tenant: "t".into(),
        at_ms: T0 + 16 * MIN,
        input_tokens: 50_000,
        ..Default::default()
    });
    assert_eq!(later.len(), 1);
}

#[test]
fn memory_is_bounded() {
    let cfg = SentinelConfig {
        max_tenants: 100,
        max_series_per_tenant: 8,
        ..SentinelConfig::default()
    };
    let mut s = Sentinel::new(cfg);
    for i in 0..10_000u64 {
        s.observe(&Observation {
            tenant: format!("t{}", i % 1000),
            user: Some(format!("u{i}")),
            key: Some(format!("k{}", i % 7)),
            tools: vec![format!("tool{}", i % 13)],
            at_ms: T0 + i,
            ..Default::default()
        });
    }
    assert!(s.tenant_count() <= 100);
    assert!(s.series_count() <= 100 * 9);
    // The most recent tenant is still there.
    assert!(s.tick(T0 + 20_000).is_empty());
    assert!(s.tenant_count() > 0);
}

#[test]
fn one_cause_is_reported_once_per_tenant_and_subject_keys_are_cooled_down() {
    let mut s = Sentinel::new(SentinelConfig::default());
    let mut all = Vec::new();
    for i in 0..40 {
        all.extend(s.observe(&Observation {
            tenant: "t".into(),
            user: Some("u".into()),
            key: Some("k".into()),
            at_ms: T0 + i * 1000,
            denied: true,
            ..Default::default()
        }));
    }
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].subject, Subject::Tenant);
    assert!(all[0].message.contains("user:u"), "{}", all[0].message);
}
