//! Progress of a long run, with an ETA, wherever stderr goes: a terminal
//! gets indicatif's bar; anything else (CI, `nohup`, a pipe, a file) gets
//! one plain line every [`LINE_EVERY`], so a ten-minute run never looks
//! hung. The ETA is the remaining work at the rate seen so far, or at the
//! planned rate before the first step has finished.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug)]
enum Sink {
    Bar(ProgressBar),
    /// Plain lines; when the last one was written.
    Lines(Option<Instant>),
}

/// The progress of `total` units of work (steps, or milliseconds).
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    /// What one unit is planned to take, for the ETA before any is done.
    planned: Duration,
    message: String,
    sink: Sink,
    /// The units are milliseconds: show them as a clock.
    timed: bool,
}

impl Progress {
    /// Progress of `total` units, each planned to take `planned`, shown on
    /// stderr as a bar or as lines depending on what stderr is.
    pub fn new(label: &str, total: u64, planned: Duration) -> Progress {
        Self::with_sink(label, total, planned, std::io::stderr().is_terminal())
    }

    fn with_sink(label: &str, total: u64, planned: Duration, terminal: bool) -> Progress {
        let sink = if terminal {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:32} {pos}/{len} [{elapsed_precise}, ETA {eta_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Sink::Bar(bar)
        } else {
            Sink::Lines(None)
        };
        Progress {
            label: label.to_owned(),
            total,
            done: 0,
            started: Instant::now(),
            planned,
            message: String::new(),
            sink,
            timed: false,
        }
    }

    /// Progress through `total` milliseconds of a timed run.
    pub fn timed(label: &str, total: Duration) -> Progress {
        let ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX);
        Progress { timed: true, ..Self::new(label, ms, Duration::from_millis(1)) }
    }

    /// `done` units of the total are finished; `message` says what runs now.
    pub fn set(&mut self, done: u64, message: &str) {
        self.done = done.min(self.total);
        message.clone_into(&mut self.message);
        let now = Instant::now();
        match &mut self.sink {
            Sink::Bar(bar) => {
                bar.set_position(self.done);
                bar.set_message(message.to_owned());
            }
            Sink::Lines(last) => {
                if last.is_none_or(|at| now.duration_since(at) >= LINE_EVERY) {
                    *last = Some(now);
                    eprintln!("{}", self.line(now));
                }
            }
        }
    }

    /// One more unit is finished.
    pub fn inc(&mut self, message: &str) {
        self.set(self.done + 1, message);
    }

    /// A line above the bar, or among the progress lines.
    pub fn println(&self, line: &str) {
        match &self.sink {
            Sink::Bar(bar) => bar.println(line),
            Sink::Lines(_) => eprintln!("{line}"),
        }
    }

    /// The run is over: clear the bar, or say how long it took.
    pub fn finish(self) {
        match self.sink {
            Sink::Bar(bar) => bar.finish_and_clear(),
            Sink::Lines(_) => {
                eprintln!("{}: done in {}", self.label, clock(self.started.elapsed()));
            }
        }
    }

    /// The time left: what remains, at the rate so far (or as planned).
    pub fn eta(&self, now: Instant) -> Duration {
        let left = self.total - self.done;
        if self.done == 0 {
            return self.planned.saturating_mul(u32::try_from(left).unwrap_or(u32::MAX));
        }
        let per_unit = now.duration_since(self.started).as_secs_f64() / self.done as f64;
        Duration::from_secs_f64(per_unit * left as f64)
    }

    /// `kvio bench compare: 3/40 (7%), elapsed 0:12, ETA 2:31: epoll 16x1`.
    fn line(&self, now: Instant) -> String {
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let (done, total) = if self.timed {
            (clock(Duration::from_millis(self.done)), clock(Duration::from_millis(self.total)))
        } else {
            (self.done.to_string(), self.total.to_string())
        };
        let mut line = format!(
            "{}: {done}/{total} ({percent}%), elapsed {}, ETA {}",
            self.label,
            clock(now.duration_since(self.started)),
            clock(self.eta(now))
        );
        if !self.message.is_empty() {
            line.push_str(": ");
            line.push_str(&self.message);
        }
        line
    }
}

/// `0:07`, `12:34`, `1:02:03`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_eta_is_planned_first_then_measured() {
        let mut p = Progress::with_sink("t", 10, Duration::from_secs(3), false);
        let t0 = p.started;
        assert_eq!(p.eta(t0), Duration::from_secs(30), "nothing done: 10 units as planned");
        p.done = 4;
        assert_eq!(p.eta(t0 + Duration::from_secs(8)), Duration::from_secs(12), "2 s a unit so far, 6 left");
        p.message = "epoll 16x1".into();
        assert_eq!(p.line(t0 + Duration::from_secs(8)), "t: 4/10 (40%), elapsed 0:08, ETA 0:12: epoll 16x1");
        p.done = 10;
        assert_eq!(p.eta(t0 + Duration::from_secs(9)), Duration::ZERO);
        let mut p = Progress { timed: true, ..Progress::with_sink("t", 60_000, Duration::from_millis(1), false) };
        p.done = 15_000;
        assert_eq!(p.line(p.started + Duration::from_secs(15)), "t: 0:15/1:00 (25%), elapsed 0:15, ETA 0:45");
    }

    #[test]
    fn clocks_read_as_clocks() {
        assert_eq!(clock(Duration::from_millis(7_900)), "0:07");
        assert_eq!(clock(Duration::from_secs(754)), "12:34");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
