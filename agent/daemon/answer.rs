//! The agent's answer to `apply` (and its start answer) waits until the services it started or
//! restarted have settled, so what apply prints is where they ended up: ready, failing (with
//! why), waiting on another node, or, if they take longer than the agent waits, their state then.

use std::time::{Duration, Instant, SystemTime};

use super::Agent;
use super::handoff::{Outcome, ServiceState};
use crate::supervisor::{ServiceSpec, ServiceStatus, State};

/// How long an answer waits at least for its services (longer where a service's ready timeout
/// is longer), and at most: below `apply --agent-timeout`'s default of 10 minutes.
const WAIT_MIN: Duration = Duration::from_secs(60);
const WAIT_MAX: Duration = Duration::from_secs(9 * 60);

/// An answer being held for its services.
pub(super) struct Held {
    outcome: Outcome,
    services: Vec<String>,
    /// Before the supervisor was told to start or restart them: a state from before is stale.
    asked: SystemTime,
    until: Instant,
}

/// Whether a service in `state` has settled, given the names of every supervised service: a
/// wait on one of those, a start, a backoff or a stop has not.
fn settled(state: &State, supervised: &[&str]) -> bool {
    match state {
        State::Ready { .. } | State::Failed { .. } | State::Exited { .. } | State::Stopped => true,
        // Waiting on a check of something elsewhere (another node's server): that can take
        // as long as the other node does, and says so.
        State::Waiting { on } => !on.is_empty() && !supervised.contains(&on.as_str()),
        State::Starting { .. } | State::Stopping { .. } | State::Backoff { .. } => false,
    }
}

/// Whether `state` is a failure that the answer reports as one.
fn failed(state: &State) -> bool {
    match state {
        State::Failed { .. } => true,
        State::Exited { exit } => !exit.success(),
        _ => false,
    }
}

/// How long to hold an answer for services with these ready timeouts: the longest plus 10 s,
/// within bounds.
fn wait_for(ready_timeouts: impl Iterator<Item = Duration>) -> Duration {
    ready_timeouts
        .map(|t| t + Duration::from_secs(10))
        .max()
        .unwrap_or_default()
        .clamp(WAIT_MIN, WAIT_MAX)
}

/// The answer's `service_states` from the supervisor's status, and whether any failed.
fn states(services: &[String], status: &[ServiceStatus]) -> (Vec<ServiceState>, bool) {
    let mut out = Vec::new();
    let mut any_failed = false;
    for name in services {
        let (state, failed) = match status.iter().find(|s| &s.name == name) {
            Some(s) => (s.state.to_string(), failed(&s.state)),
            None => ("not supervised".to_owned(), true),
        };
        any_failed |= failed;
        out.push(ServiceState {
            name: name.clone(),
            state,
            failed,
        });
    }
    (out, any_failed)
}

impl Agent {
    /// Holds `outcome` (for request `id`) until the services it started or restarted settle;
    /// `asked`: taken before the supervisor was told to start or restart them.
    /// An answer already held must have been written first ([`Agent::settle`] with `now`).
    pub(super) fn hold(&mut self, id: Option<String>, mut outcome: Outcome, asked: SystemTime) {
        debug_assert!(self.held.is_none(), "an earlier answer is still held");
        outcome.id = id;
        let services: Vec<String> = outcome
            .services
            .started
            .iter()
            .chain(outcome.services.restarted.iter().map(|(n, _)| n))
            .cloned()
            .collect();
        let timeouts = self
            .running
            .iter()
            .map(|(s, _)| s)
            .filter(|s| services.contains(&s.process.name))
            .map(|s: &ServiceSpec| s.ready_timeout);
        let until = Instant::now() + wait_for(timeouts);
        self.held = Some(Held {
            outcome,
            services,
            asked,
            until,
        });
        self.settle(false);
    }

    /// When the held answer is due: now if `now` is set, when its services have settled, or at
    /// its deadline. Writes it with the services' states.
    pub(super) fn settle(&mut self, now: bool) {
        let Some(held) = &self.held else { return };
        let status = self
            .supervisor
            .as_ref()
            .map(|s| s.status())
            .unwrap_or_default();
        let names: Vec<&str> = status.iter().map(|s| s.name.as_str()).collect();
        // A service the supervisor has not taken up yet, or whose state is from before it was
        // told, has not settled.
        let all_settled = held.services.iter().all(|n| {
            status
                .iter()
                .find(|s| &s.name == n)
                .is_some_and(|s| s.since >= held.asked && settled(&s.state, &names))
        });
        if !(now || all_settled || Instant::now() >= held.until) {
            return;
        }
        let Some(Held {
            mut outcome,
            services,
            ..
        }) = self.held.take()
        else {
            return;
        };
        let (states, any_failed) = states(&services, &status);
        if any_failed {
            outcome.ok = false;
        }
        outcome.service_states = states;
        let id = outcome.id.take();
        self.answer(id, outcome);
    }

    /// When the held answer is due at the latest.
    pub(super) fn held_until(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Exit;
    use std::time::SystemTime;

    #[test]
    fn what_counts_as_settled() {
        let here = ["a", "b"];
        assert!(settled(&State::Ready { pid: 1 }, &here));
        assert!(settled(
            &State::Failed {
                gave_up_at: SystemTime::now(),
                reason: "x".into()
            },
            &here
        ));
        assert!(settled(
            &State::Exited {
                exit: Exit::Code(0)
            },
            &here
        ));
        assert!(settled(&State::Stopped, &here));
        // Waiting on another node: settled; on a service here, or to start: not.
        assert!(settled(
            &State::Waiting {
                on: "GET http://10.0.0.1:15346/distributor/queues → 200".into()
            },
            &here
        ));
        assert!(!settled(&State::Waiting { on: "a".into() }, &here));
        assert!(!settled(&State::Waiting { on: String::new() }, &here));
        assert!(!settled(&State::Starting { pid: 1 }, &here));
        assert!(!settled(&State::Stopping { pid: 1 }, &here));
        assert!(!settled(
            &State::Backoff {
                until: Instant::now(),
                attempt: 1
            },
            &here
        ));
    }

    #[test]
    fn failures_are_reported_as_failures() {
        let status = |name: &str, state: State| ServiceStatus {
            name: name.into(),
            state,
            pid: None,
            restarts: 0,
            last_exit: None,
            last_error: None,
            since: SystemTime::now(),
        };
        let all = [
            status("ok", State::Ready { pid: 7 }),
            status(
                "done",
                State::Exited {
                    exit: Exit::Code(0),
                },
            ),
            status(
                "crashed",
                State::Exited {
                    exit: Exit::Code(3),
                },
            ),
        ];
        let (s, any) = states(&["ok".into(), "done".into()], &all);
        assert!(!any);
        assert_eq!(s[0].state, "ready (pid 7)");
        assert!(!s[0].failed && !s[1].failed);
        let (s, any) = states(&["ok".into(), "crashed".into(), "gone".into()], &all);
        assert!(any);
        assert!(s[1].failed && s[2].failed);
        assert_eq!(s[2].state, "not supervised");
    }

    #[test]
    fn the_wait_follows_the_longest_ready_timeout_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(wait_for([].into_iter()), WAIT_MIN);
        assert_eq!(wait_for([s(5)].into_iter()), WAIT_MIN);
        assert_eq!(wait_for([s(120), s(30)].into_iter()), s(130));
        assert_eq!(wait_for([s(3600)].into_iter()), WAIT_MAX);
    }
}
