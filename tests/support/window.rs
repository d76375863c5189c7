//! A seasonal window that opens soon: at the next full minute, in UTC.

use std::time::Duration;

use jiff::{RoundMode, SignedDuration, Span, Unit, Zoned, ZonedRound, tz::TimeZone};

pub struct Window {
    pub start: Zoned,
    pub end: Zoned,
}

impl Window {
    /// `minutes` long, from the next full minute (UTC) at least `lead` away,
    /// so the subscription is applied and planned before the window opens.
    pub fn at_next_full_minute(lead: Duration, minutes: i64) -> Self {
        let now = jiff::Timestamp::now().to_zoned(TimeZone::UTC);
        let mut start = now
            .round(
                ZonedRound::new()
                    .smallest(Unit::Minute)
                    .mode(RoundMode::Ceil),
            )
            .unwrap();
        if start.duration_since(&now) < SignedDuration::try_from(lead).unwrap() {
            start = start.checked_add(Span::new().minutes(1)).unwrap();
        }
        let end = start.checked_add(Span::new().minutes(minutes)).unwrap();
        Self { start, end }
    }

    /// The day it opens, as a window's `days` names it ("Mon").
    pub fn day(&self) -> String {
        format!("{:?}", self.start.weekday())[..3].to_string()
    }

    /// `start` as a window writes it (HH:MM).
    pub fn start_hhmm(&self) -> String {
        self.start.strftime("%H:%M").to_string()
    }

    /// `end` as a window writes it: an end at midnight is 24:00 (the window
    /// belongs to the day it starts).
    pub fn end_hhmm(&self) -> String {
        if self.end.hour() == 0 && self.end.minute() == 0 {
            "24:00".to_string()
        } else {
            self.end.strftime("%H:%M").to_string()
        }
    }

    /// The opening as `status.nextTransition` reports it.
    pub fn start_rfc3339(&self) -> String {
        self.start.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    }
}
