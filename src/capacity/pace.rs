//! How fast a module's pods may come and go: the HPA's scaling behaviour,
//! the per-pod target of a sessions metric, and the steps by which a
//! lowered ceiling comes down so that no live call is cut at once.

use crate::api::{ScaleRate, Scaling};

/// A scaling pace with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub stabilization_seconds: i32,
    pub period_seconds: i32,
    pub max_percent: i32,
    pub max_pods: i32,
}

impl Pace {
    /// Scale-down default: calls are long, so wait 5 minutes of lower
    /// demand, then let at most 1 pod or 10 % of the pods go each minute.
    pub const DOWN: Pace = Pace {
        stabilization_seconds: 300,
        period_seconds: 60,
        max_percent: 10,
        max_pods: 1,
    };
    /// Scale-up default: follow demand at once, doubling or adding 4 pods
    /// every 15 s (the HPA controller's own default).
    pub const UP: Pace = Pace {
        stabilization_seconds: 0,
        period_seconds: 15,
        max_percent: 100,
        max_pods: 4,
    };

    fn with(rate: Option<&ScaleRate>, default: Pace) -> Pace {
        let Some(r) = rate else { return default };
        Pace {
            stabilization_seconds: r
                .stabilization_seconds
                .unwrap_or(default.stabilization_seconds),
            period_seconds: r.period_seconds.unwrap_or(default.period_seconds),
            max_percent: r.max_percent.unwrap_or(default.max_percent),
            max_pods: r.max_pods.unwrap_or(default.max_pods),
        }
    }

    /// Pods this pace lets go (or add) in one period, starting from `pods`:
    /// the larger of its two policies, as the HPA's `selectPolicy: Max`.
    pub fn per_period(&self, pods: i32) -> i32 {
        let share = (pods.max(0) as i64 * self.max_percent as i64 / 100) as i32;
        share.max(self.max_pods)
    }
}

impl Scaling {
    pub fn down_pace(&self) -> Pace {
        Pace::with(self.scale_down.as_ref(), Pace::DOWN)
    }

    pub fn up_pace(&self) -> Pace {
        Pace::with(self.scale_up.as_ref(), Pace::UP)
    }

    /// The CPU target the HPA gets: the one set, else 70 % when no
    /// sessions metric is named (with one, CPU is followed only if set).
    pub fn cpu_target(&self) -> Option<i32> {
        match (self.cpu_utilization, &self.sessions) {
            (Some(cpu), _) => Some(cpu),
            (None, None) => Some(70),
            (None, Some(_)) => None,
        }
    }
}

/// The average sessions per pod the HPA aims at, as a Kubernetes quantity:
/// `targetPercent` of what one replica carries (milli-units when it is not
/// a whole number).
pub fn sessions_target(sessions_per_replica: i32, target_percent: i32) -> String {
    let hundredths = sessions_per_replica.max(1) as i64 * target_percent.clamp(1, 100) as i64;
    if hundredths % 100 == 0 {
        (hundredths / 100).to_string()
    } else {
        format!("{}m", hundredths * 10)
    }
}

/// What the operator knows when a ceiling is lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RampInput {
    /// The ceiling the plan asks for now.
    pub target: i32,
    /// The ceiling in force: the HPA's maxReplicas as last written.
    pub previous: i32,
    /// The pods the HPA runs now, if known.
    pub current: Option<i32>,
    /// When the ceiling was last stepped down (Unix seconds), if it was.
    pub last_step: Option<i64>,
    /// When the HPA last scaled (Unix seconds), if known: a scale-down the
    /// HPA made itself uses up the same period. The namespace's admin can
    /// make the HPA scale (scaling the Deployment by hand, which the HPA
    /// scales back), so this delays a step by one more period at most:
    /// the ramp cannot be held up from inside the namespace.
    pub last_scale: Option<i64>,
    pub now: i64,
}

/// The ceiling to write now, and when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ramp {
    /// The plan's ceiling applies as it is.
    Direct,
    /// The ceiling comes down in steps: write `max_replicas` now.
    Step {
        max_replicas: i32,
        /// True when this is a step (pods may leave now); false when the
        /// ceiling only comes down to the pods that run.
        stepped: bool,
        /// When the next step may be taken (Unix seconds).
        next_at: i64,
        /// When the ceiling reaches the target at this pace, if every
        /// step is taken on time (Unix seconds).
        until: i64,
    },
}

/// Brings a lowered ceiling down at the scale-down pace. A raise, or a
/// lowering that no running pod is above (or with no pods known), applies
/// at once: only pods that
/// would have to leave are paced. The HPA controller scales straight to a
/// lowered maxReplicas, ignoring its own behaviour, so without this a
/// season's end would cut every surplus pod (and its calls) at one sync.
pub fn ramp_down(input: RampInput, pace: Pace) -> Ramp {
    let RampInput {
        target,
        previous,
        current,
        last_step,
        last_scale,
        now,
    } = input;
    // No pods known to run (no Deployment status yet): none to protect.
    let Some(running) = current else {
        return Ramp::Direct;
    };
    if target >= previous || running <= target {
        return Ramp::Direct;
    }
    let period = pace.period_seconds.max(1) as i64;
    // Both instants are whole seconds, cut from later ones: a step waits a
    // second more than the period, so that none comes early.
    let wait = period + 1;
    let due = match (last_step, last_scale) {
        (None, None) => now,
        (None, Some(scale)) => scale + wait,
        (Some(step), scale) => {
            (step + wait).max(scale.map_or(0, |scale| (scale + wait).min(step + 2 * wait)))
        }
    };
    // Step from what runs (the HPA may already be below the old ceiling),
    // never above the ceiling in force.
    let base = running.min(previous);
    // Not yet due: the ceiling comes down to what runs (no pod leaves).
    let (max_replicas, stepped, next_at) = if now >= due {
        let next = (base - pace.per_period(base)).max(target);
        (next, true, now + period + 1)
    } else {
        (base, false, due)
    };
    // How long the rest takes at this pace: a step each period and a second.
    let mut until = if stepped { now } else { due - period - 1 };
    let mut pods = max_replicas;
    while pods > target {
        pods = (pods - pace.per_period(pods)).max(target);
        until += period + 1;
    }
    if max_replicas <= target {
        return Ramp::Direct;
    }
    Ramp::Step {
        max_replicas,
        stepped,
        next_at,
        until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's ceiling, whether it is a step, and when the next is due.
    fn step(r: Ramp) -> Option<(i32, bool, i64)> {
        match r {
            Ramp::Step {
                max_replicas,
                stepped,
                next_at,
                ..
            } => Some((max_replicas, stepped, next_at)),
            Ramp::Direct => None,
        }
    }

    /// A step's ceiling, whether it is a step, and when the ramp ends.
    fn step_until(r: Ramp) -> Option<(i32, bool, i64)> {
        match r {
            Ramp::Step {
                max_replicas,
                stepped,
                until,
                ..
            } => Some((max_replicas, stepped, until)),
            Ramp::Direct => None,
        }
    }

    fn input(target: i32, previous: i32, current: Option<i32>) -> RampInput {
        RampInput {
            target,
            previous,
            current,
            last_step: None,
            last_scale: None,
            now: 1_000,
        }
    }

    #[test]
    fn a_raise_or_an_unchanged_ceiling_applies_at_once() {
        assert_eq!(ramp_down(input(30, 20, Some(20)), Pace::DOWN), Ramp::Direct);
        assert_eq!(ramp_down(input(20, 20, Some(20)), Pace::DOWN), Ramp::Direct);
    }

    #[test]
    fn a_lowering_no_pod_is_above_applies_at_once() {
        // Ceiling 40 → 10 while the HPA runs 8 pods: nothing has to leave.
        assert_eq!(ramp_down(input(10, 40, Some(8)), Pace::DOWN), Ramp::Direct);
        assert_eq!(ramp_down(input(10, 40, Some(10)), Pace::DOWN), Ramp::Direct);
    }

    #[test]
    fn a_lowering_steps_by_the_pace_from_the_running_pods() {
        // 40 running, ceiling 40 → 10, default pace: 10 % of 40 = 4 first.
        let r = ramp_down(input(10, 40, Some(40)), Pace::DOWN);
        assert_eq!(
            r,
            Ramp::Step {
                max_replicas: 36,
                stepped: true,
                next_at: 1_061,
                // 36→33→30→27→25→23→21→19→18→17→16→15→14→13→12→11→10
                until: 1_000 + 16 * 61,
            }
        );
        // From fewer running pods than the old ceiling, the step starts there.
        let r = ramp_down(input(10, 40, Some(20)), Pace::DOWN);
        assert_eq!(step(r), Some((18, true, 1_061)));
    }

    #[test]
    fn the_next_step_waits_a_period_after_the_last_one_or_the_hpas_own_scale() {
        let mut i = input(10, 36, Some(36));
        // Not due, but fewer pods run than the ceiling: down to them at once.
        i.current = Some(30);
        i.last_step = Some(970);
        let r = ramp_down(i, Pace::DOWN);
        assert_eq!(step(r), Some((30, false, 1_031)));
        i.current = Some(36);
        i.last_step = Some(970);
        let r = ramp_down(i, Pace::DOWN);
        assert_eq!(step(r), Some((36, false, 1_031)));
        i.last_step = Some(939);
        i.last_scale = Some(990);
        let r = ramp_down(i, Pace::DOWN);
        assert_eq!(step(r), Some((36, false, 1_051)));
        i.last_scale = Some(900);
        let r = ramp_down(i, Pace::DOWN);
        assert_eq!(step(r), Some((33, true, 1_061)));
    }

    #[test]
    fn an_hpa_scaling_again_and_again_delays_a_step_by_one_period_at_most() {
        // The HPA scales every few seconds (the namespace admin scales the
        // Deployment by hand, the HPA scales it back): each step still
        // comes within two periods of the last.
        let mut i = input(10, 36, Some(36));
        i.last_step = Some(900);
        for now in [961, 1_000, 1_021] {
            i.now = now;
            i.last_scale = Some(now - 1);
            let r = ramp_down(i, Pace::DOWN);
            assert_eq!(step(r).map(|s| s.1), Some(now >= 1_022), "at {now}: {r:?}");
        }
        i.now = 1_022;
        i.last_scale = Some(1_021);
        assert_eq!(step(ramp_down(i, Pace::DOWN)), Some((33, true, 1_083)));
        // Before any step, the HPA's last scale is waited for once; the
        // operator records it as the step to count from (see decide).
        let mut i = input(10, 36, Some(36));
        i.last_scale = Some(990);
        assert_eq!(step(ramp_down(i, Pace::DOWN)), Some((36, false, 1_051)));
    }

    #[test]
    fn the_last_step_lands_on_the_target() {
        let r = ramp_down(input(10, 11, Some(11)), Pace::DOWN);
        assert_eq!(r, Ramp::Direct, "one pod above: the pace allows it now");
        let pace = Pace {
            max_percent: 50,
            max_pods: 1,
            ..Pace::DOWN
        };
        assert_eq!(ramp_down(input(10, 16, Some(16)), pace), Ramp::Direct);
        let r = ramp_down(input(10, 24, Some(24)), pace);
        assert_eq!(step_until(r), Some((12, true, 1_061)));
    }

    #[test]
    fn no_step_removes_more_than_the_pace_allows() {
        // Walk a ramp through time as the operator would, and check each
        // written ceiling against the bound of one period.
        for (target, previous, pace) in [
            (1, 100, Pace::DOWN),
            (5, 7, Pace::DOWN),
            (
                2,
                500,
                Pace {
                    max_percent: 25,
                    max_pods: 3,
                    ..Pace::DOWN
                },
            ),
        ] {
            let mut ceiling = previous;
            let mut last_step = None;
            let mut now = 0;
            let mut steps = 0;
            while ceiling > target {
                let r = ramp_down(
                    RampInput {
                        target,
                        previous: ceiling,
                        current: Some(ceiling),
                        last_step,
                        last_scale: None,
                        now,
                    },
                    pace,
                );
                let next = match r {
                    Ramp::Direct => target,
                    Ramp::Step {
                        max_replicas,
                        stepped,
                        ..
                    } => {
                        if stepped {
                            last_step = Some(now);
                        }
                        max_replicas
                    }
                };
                assert!(
                    ceiling - next <= pace.per_period(ceiling),
                    "{ceiling} → {next} at {pace:?}"
                );
                if next < ceiling {
                    steps += 1;
                }
                ceiling = next;
                now += 10;
                assert!(now < 1_000_000, "ramp never ends");
            }
            assert!(steps > 1 || previous - target <= pace.per_period(previous));
        }
    }

    #[test]
    fn sessions_targets_are_quantities() {
        assert_eq!(sessions_target(50, 80), "40");
        assert_eq!(sessions_target(4, 80), "3200m");
        assert_eq!(sessions_target(1, 1), "10m");
        assert_eq!(sessions_target(1000, 100), "1000");
    }

    #[test]
    fn cpu_is_followed_by_default_only_without_a_sessions_metric() {
        let mut s = Scaling::default();
        assert_eq!(s.cpu_target(), Some(70));
        s.sessions = Some(crate::api::SessionsMetric {
            metric: "rtc_sessions_active".into(),
            target_percent: 80,
        });
        assert_eq!(s.cpu_target(), None);
        s.cpu_utilization = Some(85);
        assert_eq!(s.cpu_target(), Some(85));
    }
}
