//! The statistical detectors: a robust EWMA baseline with exponentially weighted variance
//! (z-score test) and a two-sided CUSUM on the same standardised residuals.

use crate::config::DetectorConfig;

/// What a detector saw in one closed bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// |z| over the z threshold (one bucket far off the baseline).
    Ewma { z: f64, baseline: f64 },
    /// The upper CUSUM crossed `h` (a sustained rise).
    CusumUp { score: f64, baseline: f64 },
    /// The lower CUSUM crossed `h` (a sustained fall).
    CusumDown { score: f64, baseline: f64 },
}

/// Baseline and CUSUM state of one (series, signal). Eight floats: cheap enough to keep
/// one per signal for thousands of series.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    n: u32,
    mean: f64,
    var: f64,
    cpos: f64,
    cneg: f64,
}

impl Detector {
    /// Current baseline (EWMA mean).
    pub fn baseline(&self) -> f64 {
        self.mean
    }

    /// Buckets seen.
    pub fn seen(&self) -> u32 {
        self.n
    }

    /// Feeds one bucket value `x`. `noise_var` is the variance the value would have from
    /// sampling alone (Poisson for counts, binomial for ratios): the z-score never uses a
    /// variance below it, so a quiet, perfectly flat baseline does not make a single
    /// extra request look like a 50-sigma event.
    pub fn update(&mut self, x: f64, noise_var: f64, cfg: &DetectorConfig) -> Vec<Trigger> {
        let alpha = 2.0 / (f64::from(cfg.span_buckets.max(1)) + 1.0);
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
            self.n = 1;
            return Vec::new();
        }
        let floor = noise_var
            .max((cfg.rel_floor * self.mean.abs()).powi(2))
            .max(cfg.abs_floor * cfg.abs_floor);
        let sd = self.var.max(floor).sqrt();
        let resid = x - self.mean;
        let z = if sd > 0.0 { resid / sd } else { 0.0 };
        let mut out = Vec::new();
        let warm = self.n >= cfg.warmup_buckets;
        if warm {
            if z >= cfg.z_threshold {
                out.push(Trigger::Ewma {
                    z,
                    baseline: self.mean,
                });
            }
            // Clamp so one wild bucket cannot dominate the sum; k is the slack that
            // ordinary noise (|z| < k on average) spends without accumulating.
            let zc = z.clamp(-cfg.cusum_clamp, cfg.cusum_clamp);
            self.cpos = (self.cpos + zc - cfg.cusum_k).max(0.0);
            self.cneg = (self.cneg - zc - cfg.cusum_k).max(0.0);
            if self.cpos > cfg.cusum_h {
                out.push(Trigger::CusumUp {
                    score: self.cpos,
                    baseline: self.mean,
                });
                self.cpos = 0.0;
                self.cneg = 0.0;
            } else if self.cneg > cfg.cusum_h {
                out.push(Trigger::CusumDown {
                    score: self.cneg,
                    baseline: self.mean,
                });
                self.cpos = 0.0;
                self.cneg = 0.0;
            }
        }
        // Winsorised update: an attack moves the baseline at most `clamp` sigmas per
        // bucket (times alpha), so it is not learnt as normal before it is reported.
        let limit = cfg.update_clamp * sd;
        let r = if limit > 0.0 && warm {
            resid.clamp(-limit, limit)
        } else {
            resid
        };
        self.mean += alpha * r;
        self.var = (1.0 - alpha) * (self.var + alpha * r * r);
        self.n = self.n.saturating_add(1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_series_never_triggers_and_step_does() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::default();
        for _ in 0..500 {
            assert!(d.update(10.0, 10.0, &cfg).is_empty());
        }
        let t = d.update(60.0, 10.0, &cfg);
        assert!(matches!(t[0], Trigger::Ewma { .. }));
    }

    #[test]
    fn cusum_resets_after_alert() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::default();
        for _ in 0..100 {
            d.update(100.0, 100.0, &cfg);
        }
        // +3.5 sigma sustained: below the z threshold, the CUSUM catches it.
        let mut fired = Vec::new();
        for i in 0..40 {
            for t in d.update(135.0, 100.0, &cfg) {
                if matches!(t, Trigger::CusumUp { .. }) {
                    fired.push(i);
                }
            }
        }
        assert!(!fired.is_empty());
        assert!(d.cpos.max(d.cneg) <= cfg.cusum_h);
        // After an alert the sum starts from zero: the next alert needs a fresh run.
        if fired.len() > 1 {
            assert!(fired[1] - fired[0] >= 3);
        }
    }
}
