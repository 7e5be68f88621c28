//! Service checks (protocol §5.7): what a check is, and the rise/fall
//! counting that turns check results into UP and DOWN, as HAProxy counts
//! them. Free of I/O; `checker` runs the checks.
use std::{fmt, str::FromStr};

/// One `--check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckSpec {
    /// A TCP connection to 127.0.0.1:port is accepted.
    Tcp { port: u16 },
    /// `GET path` answers with a 2xx or 3xx status.
    Http {
        host: String,
        port: u16,
        path: String,
    },
    /// `sh -c command` exits 0.
    Exec { command: String },
}

impl FromStr for CheckSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(port) = s.strip_prefix("tcp:") {
            return Ok(CheckSpec::Tcp {
                port: check_port(port)?,
            });
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (host, check_port(port)?),
                None => (authority, 80),
            };
            if host.is_empty() {
                return Err(format!("{s:?} names no host (http://HOST:PORT/PATH)"));
            }
            return Ok(CheckSpec::Http {
                host: host.to_owned(),
                port,
                path: if path.is_empty() { "/" } else { path }.to_owned(),
            });
        }
        if let Some(command) = s.strip_prefix("exec:") {
            if command.trim().is_empty() {
                return Err("exec: needs a command (exec:COMMAND)".to_owned());
            }
            return Ok(CheckSpec::Exec {
                command: command.to_owned(),
            });
        }
        Err(format!(
            "{s:?} is not a check: use tcp:PORT, http://HOST:PORT/PATH or exec:COMMAND"
        ))
    }
}

fn check_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a port (1..=65535)")),
        Ok(port) => Ok(port),
    }
}

impl fmt::Display for CheckSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckSpec::Tcp { port } => write!(f, "tcp:{port}"),
            CheckSpec::Http { host, port, path } => write!(f, "http://{host}:{port}{path}"),
            CheckSpec::Exec { command } => write!(f, "exec:{command}"),
        }
    }
}

/// The service's state as the LB is told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
}

/// Counts consecutive results: `rise` passes in a row bring a DOWN
/// service up, `fall` failures in a row bring an UP one down. A service
/// starts DOWN, so traffic never reaches one that has not come up.
#[derive(Clone, Debug)]
pub struct Health {
    rise: u32,
    fall: u32,
    state: State,
    /// Results in a row that disagree with `state`.
    streak: u32,
}

impl Health {
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: State::Down,
            streak: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Records one round of checks; returns the new state if it changed.
    pub fn record(&mut self, passed: bool) -> Option<State> {
        let agrees = matches!(
            (self.state, passed),
            (State::Up, true) | (State::Down, false)
        );
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = match self.state {
            State::Down => self.rise,
            State::Up => self.fall,
        };
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        self.state = match self.state {
            State::Down => State::Up,
            State::Up => State::Down,
        };
        Some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Health, results: &[bool]) -> Vec<Option<State>> {
        results.iter().map(|&r| h.record(r)).collect()
    }

    #[test]
    fn starts_down_and_rises_after_rise_passes_in_a_row() {
        let mut h = Health::new(2, 3);
        assert_eq!(h.state(), State::Down);
        assert_eq!(
            run(&mut h, &[true, false, true, true]),
            vec![None, None, None, Some(State::Up)]
        );
    }

    #[test]
    fn falls_after_fall_failures_in_a_row_and_a_pass_resets_the_count() {
        let mut h = Health::new(1, 3);
        assert_eq!(h.record(true), Some(State::Up));
        assert_eq!(
            run(&mut h, &[false, false, true, false, false, false]),
            vec![None, None, None, None, None, Some(State::Down)]
        );
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), Some(State::Up));
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        let mut h = Health::new(1, 1);
        assert_eq!(
            run(&mut h, &[true, true, false, true]),
            vec![Some(State::Up), None, Some(State::Down), Some(State::Up)]
        );
    }

    #[test]
    fn check_specs_parse_or_say_what_is_wrong() {
        assert_eq!("tcp:8080".parse(), Ok(CheckSpec::Tcp { port: 8080 }));
        assert_eq!(
            "http://127.0.0.1:8080/health".parse(),
            Ok(CheckSpec::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health".into()
            })
        );
        assert_eq!(
            "http://localhost".parse(),
            Ok(CheckSpec::Http {
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            })
        );
        assert_eq!(
            "exec:test -e /run/ok".parse(),
            Ok(CheckSpec::Exec {
                command: "test -e /run/ok".into()
            })
        );
        for bad in [
            "tcp:0",
            "tcp:http",
            "tcp:70000",
            "udp:53",
            "https://x/",
            "http://:80/",
            "http://h:0/",
            "exec:",
            "exec:  ",
            "",
        ] {
            assert!(bad.parse::<CheckSpec>().is_err(), "{bad:?}");
        }
        let spec: CheckSpec = "http://h:81/p".parse().unwrap();
        assert_eq!(spec.to_string(), "http://h:81/p");
    }
}
