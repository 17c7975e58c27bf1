//! When to start a service again: the restart policy, exponential backoff with jitter and a cap,
//! the reset after a healthy run, and the start-limit breaker.
//!
//! Pure: time comes in as `Instant`s from the caller, randomness from a seeded generator, so every
//! rule is tested on a fake clock without sleeping. The first restart after a healthy run is
//! immediate (systemd waits 100 ms, supervisord a whole second); each further failure doubles the
//! delay up to the cap, with ±`jitter` spread so a node's services do not restart in lockstep
//! (supervisord#1640). Too many starts inside the window trip the breaker: the service is reported
//! as failing, with the time it gave up, instead of restarting forever (supervisord#405) or going
//! quiet.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Whether a service that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// After every exit, clean or not.
    #[default]
    Always,
    /// Only after an exit with a non-zero status or a signal.
    OnFailure,
    /// Never: an exit is final.
    Never,
}

impl RestartPolicy {
    /// Whether an exit that was `success`ful (status 0) is followed by a restart.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// The numbers behind [`Backoff`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    pub policy: RestartPolicy,
    /// The delay before the second restart in a row (the first one is immediate).
    pub base: Duration,
    /// The delay never grows beyond this, jitter included.
    pub cap: Duration,
    /// Spread of each delay, as a fraction: 0.2 gives delays within ±20 %.
    pub jitter: f64,
    /// A run at least this long counts as healthy: the next restart is immediate again.
    pub healthy_after: Duration,
    /// The breaker trips when this many starts fall inside `start_window`.
    pub start_limit: u32,
    pub start_window: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            policy: RestartPolicy::Always,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
            jitter: 0.2,
            healthy_after: Duration::from_secs(10),
            start_limit: 10,
            start_window: Duration::from_secs(60),
        }
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start again once this much time has passed (zero: at once).
    RestartIn(Duration),
    /// The policy says this exit is final.
    Stay,
    /// The breaker tripped: `starts` starts within `window`. Not restarted until reset.
    GiveUp { starts: u32, window: Duration },
}

/// The restart state of one service.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Failed runs since the last healthy one; 0 means the next restart is immediate.
    attempt: u32,
    /// Start times inside the breaker window, oldest first.
    starts: VecDeque<Instant>,
    rng: u64,
}

impl Backoff {
    /// `seed` drives the jitter; the supervisor seeds each service differently.
    pub fn new(config: BackoffConfig, seed: u64) -> Backoff {
        Backoff {
            config,
            attempt: 0,
            starts: VecDeque::new(),
            rng: seed,
        }
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Failed runs since the last healthy one.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Records a start at `now`.
    pub fn started(&mut self, now: Instant) {
        self.starts.push_back(now);
    }

    /// Decides what follows an exit at `now` of the run that started at `started`.
    pub fn exited(&mut self, started: Instant, now: Instant, success: bool) -> Decision {
        if now.saturating_duration_since(started) >= self.config.healthy_after {
            self.attempt = 0;
            self.starts.clear();
            self.starts.push_back(started);
        }
        if !self.config.policy.restarts(success) {
            return Decision::Stay;
        }
        let window = self.config.start_window;
        while self
            .starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.starts.pop_front();
        }
        let starts = u32::try_from(self.starts.len()).unwrap_or(u32::MAX);
        if starts >= self.config.start_limit {
            return Decision::GiveUp { starts, window };
        }
        let delay = self.delay();
        self.attempt = self.attempt.saturating_add(1);
        Decision::RestartIn(delay)
    }

    /// Clears the breaker and the backoff (an operator asked for a fresh start).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.starts.clear();
    }

    /// The delay for the current attempt: 0, then base·2^(n-1) with jitter, never above the cap.
    fn delay(&mut self) -> Duration {
        if self.attempt == 0 {
            return Duration::ZERO;
        }
        let exp = (self.attempt - 1).min(40);
        let nominal = self
            .config
            .base
            .saturating_mul(1u32 << exp.min(31))
            .min(self.config.cap);
        let spread = self.config.jitter.clamp(0.0, 1.0) * (2.0 * self.unit() - 1.0);
        nominal.mul_f64(1.0 + spread).min(self.config.cap)
    }

    /// A uniform number in [0, 1) (splitmix64).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> BackoffConfig {
        BackoffConfig {
            policy: RestartPolicy::Always,
            base: ms(100),
            cap: ms(1600),
            jitter: 0.0,
            healthy_after: Duration::from_secs(10),
            start_limit: 1000,
            start_window: Duration::from_secs(60),
        }
    }

    /// Runs `n` crashes that each last `run` on the fake clock, returning the delays.
    fn crash_loop(b: &mut Backoff, t0: Instant, n: usize, run: Duration) -> Vec<Decision> {
        let mut now = t0;
        let mut out = Vec::new();
        for _ in 0..n {
            b.started(now);
            let started = now;
            now += run;
            let d = b.exited(started, now, false);
            if let Decision::RestartIn(delay) = d {
                now += delay;
            }
            out.push(d);
        }
        out
    }

    #[test]
    fn policy_table() {
        assert!(RestartPolicy::Always.restarts(true));
        assert!(RestartPolicy::Always.restarts(false));
        assert!(!RestartPolicy::OnFailure.restarts(true));
        assert!(RestartPolicy::OnFailure.restarts(false));
        assert!(!RestartPolicy::Never.restarts(true));
        assert!(!RestartPolicy::Never.restarts(false));
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_up_to_the_cap() {
        let mut b = Backoff::new(config(), 1);
        let got = crash_loop(&mut b, Instant::now(), 8, ms(5));
        let want: Vec<Decision> = [0, 100, 200, 400, 800, 1600, 1600, 1600]
            .into_iter()
            .map(|n| Decision::RestartIn(ms(n)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(b.attempt(), 8);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(config(), 1);
        let got = crash_loop(&mut b, Instant::now(), 100, ms(1));
        assert_eq!(got.last(), Some(&Decision::RestartIn(ms(1600))));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_under_the_cap() {
        let cfg = BackoffConfig {
            jitter: 0.25,
            ..config()
        };
        for seed in 0..200 {
            let mut b = Backoff::new(cfg.clone(), seed);
            let got = crash_loop(&mut b, Instant::now(), 8, ms(5));
            assert_eq!(got[0], Decision::RestartIn(Duration::ZERO), "seed {seed}");
            for (i, nominal) in [(1, 100u64), (2, 200), (3, 400), (4, 800), (6, 1600)] {
                let Decision::RestartIn(d) = got[i] else {
                    panic!("seed {seed}: {:?}", got[i])
                };
                let lo = ms(nominal).mul_f64(0.75);
                let hi = ms(nominal).mul_f64(1.25).min(ms(1600));
                assert!(d >= lo && d <= hi, "seed {seed} attempt {i}: {d:?}");
            }
        }
    }

    #[test]
    fn jitter_actually_spreads_delays() {
        let cfg = BackoffConfig {
            jitter: 0.25,
            ..config()
        };
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|seed| {
                let mut b = Backoff::new(cfg.clone(), seed);
                match &crash_loop(&mut b, Instant::now(), 2, ms(5))[1] {
                    Decision::RestartIn(d) => *d,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert!(delays.len() > 40, "only {} distinct delays", delays.len());
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let mut b = Backoff::new(config(), 1);
        let t0 = Instant::now();
        crash_loop(&mut b, t0, 4, ms(5));
        assert_eq!(b.attempt(), 4);
        let start = t0 + Duration::from_secs(100);
        b.started(start);
        // Just short of healthy: still backing off.
        let d = b.exited(start, start + ms(9_999), false);
        assert_eq!(d, Decision::RestartIn(ms(800)));
        let start = start + Duration::from_secs(20);
        b.started(start);
        let d = b.exited(start, start + Duration::from_secs(10), false);
        assert_eq!(d, Decision::RestartIn(Duration::ZERO));
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn policy_never_and_on_failure_after_a_clean_exit_stay_down() {
        let t0 = Instant::now();
        for policy in [RestartPolicy::Never, RestartPolicy::OnFailure] {
            let mut b = Backoff::new(BackoffConfig { policy, ..config() }, 1);
            b.started(t0);
            assert_eq!(b.exited(t0, t0 + ms(5), true), Decision::Stay);
        }
        let mut b = Backoff::new(
            BackoffConfig {
                policy: RestartPolicy::OnFailure,
                ..config()
            },
            1,
        );
        b.started(t0);
        assert_eq!(
            b.exited(t0, t0 + ms(5), false),
            Decision::RestartIn(Duration::ZERO)
        );
    }

    #[test]
    fn breaker_trips_after_the_start_limit_inside_the_window() {
        let cfg = BackoffConfig {
            start_limit: 5,
            start_window: Duration::from_secs(10),
            ..config()
        };
        let mut b = Backoff::new(cfg, 1);
        let got = crash_loop(&mut b, Instant::now(), 5, ms(5));
        assert!(matches!(got[3], Decision::RestartIn(_)));
        assert_eq!(
            got[4],
            Decision::GiveUp {
                starts: 5,
                window: Duration::from_secs(10)
            }
        );
        b.reset();
        let t = Instant::now() + Duration::from_secs(1000);
        b.started(t);
        assert_eq!(b.exited(t, t + ms(1), false), Decision::RestartIn(ms(0)));
    }

    #[test]
    fn starts_spread_wider_than_the_window_do_not_trip_the_breaker() {
        let cfg = BackoffConfig {
            start_limit: 3,
            start_window: Duration::from_secs(10),
            healthy_after: Duration::from_secs(3600),
            ..config()
        };
        let mut b = Backoff::new(cfg, 1);
        // Each run lasts 6 s: at most two starts ever fall inside a 10 s window.
        let got = crash_loop(&mut b, Instant::now(), 20, Duration::from_secs(6));
        assert!(
            got.iter().all(|d| matches!(d, Decision::RestartIn(_))),
            "{got:?}"
        );
    }
}
