//! Medians and spreads over repeated runs, shared by every report.

/// The median of `v` (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median, if every value is there.
pub fn median_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = v.collect();
    v.map(median)
}

/// A rate over repetitions: median and range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: impl Iterator<Item = f64> + Clone) -> Spread {
        Spread {
            median: median(v.clone().collect()),
            min: v.clone().fold(f64::INFINITY, f64::min),
            max: v.fold(0.0, f64::max),
        }
    }

    /// The median as a percentage of `native`'s (none when native measured nothing).
    pub fn percent_of(&self, native: &Spread) -> Option<f64> {
        (native.median > 0.0).then(|| self.median / native.median * 100.0)
    }

    /// Half the min..max range as a percentage of the median (0 for a zero median).
    pub fn half_range_percent(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / 2.0 / self.median * 100.0
        } else {
            0.0
        }
    }

    /// Whether the two min..max ranges do not overlap: a difference beyond the run-to-run
    /// spread.
    pub fn differs_from(&self, native: &Spread) -> bool {
        self.max < native.min || self.min > native.max
    }
}

/// The item whose `rate` is closest to `target`: the run closest to the median, which plots
/// show in detail.
pub fn closest<T>(items: &[T], target: f64, rate: impl Fn(&T) -> f64) -> Option<&T> {
    items.iter().min_by(|a, b| {
        (rate(a) - target)
            .abs()
            .total_cmp(&(rate(b) - target).abs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
        assert_eq!(median_opt([Some(1.0), None].into_iter()), None);
        let s = Spread::of([100.0, 300.0, 200.0].into_iter());
        assert_eq!((s.median, s.min, s.max), (200.0, 100.0, 300.0));
        let native = Spread::of([250.0, 400.0].into_iter());
        assert_eq!(s.percent_of(&native), Some(200.0 / 325.0 * 100.0));
        assert!(!s.differs_from(&native));
        assert!(Spread::of([10.0, 20.0].into_iter()).differs_from(&native));
        assert_eq!(s.half_range_percent(), 50.0);
        assert_eq!(closest(&[1.0, 5.0, 9.0], 6.0, |v| *v), Some(&5.0));
        assert_eq!(closest(&[] as &[f64], 6.0, |v| *v), None);
    }
}
