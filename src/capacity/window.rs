//! Seasonal windows evaluated against the wall clock of an IANA time zone.
//!
//! A window's activity is a function of local civil time only, so it can be
//! recomputed from the clock at any moment: a missed tick or a restart never
//! leaves a tenant in the wrong season.

use std::fmt;

use jiff::{
    Timestamp,
    civil::{Date, DateTime, Time},
    tz::TimeZone,
};

use crate::api::{Weekday, Window};

/// How far ahead the next transition is searched for day-by-day.
const HORIZON_DAYS: i32 = 400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowError {
    UnknownTimeZone(String),
    BadDate {
        window: String,
        field: &'static str,
        value: String,
    },
    BadTime {
        window: String,
        field: &'static str,
        value: String,
    },
    Incomplete {
        window: String,
        message: &'static str,
    },
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownTimeZone(tz) => write!(
                f,
                "unknown time zone {tz:?} (want an IANA name such as Asia/Shanghai)"
            ),
            Self::BadDate {
                window,
                field,
                value,
            } => {
                write!(
                    f,
                    "window {window}: {field} {value:?} is not a calendar date (MM-DD or YYYY-MM-DD)"
                )
            }
            Self::BadTime {
                window,
                field,
                value,
            } => write!(
                f,
                "window {window}: {field} {value:?} is not a time (HH:MM)"
            ),
            Self::Incomplete { window, message } => write!(f, "window {window}: {message}"),
        }
    }
}

impl std::error::Error for WindowError {}

/// A date bound: every year on a month/day, or one fixed day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateBound {
    Yearly { month: i8, day: i8 },
    Fixed(Date),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateRange {
    Yearly { from: (i8, i8), to: (i8, i8) },
    Fixed { from: Date, to: Date },
}

impl DateRange {
    fn contains(&self, d: Date) -> bool {
        match *self {
            Self::Yearly { from, to } => {
                let md = (d.month(), d.day());
                if from <= to {
                    from <= md && md <= to
                } else {
                    md >= from || md <= to
                }
            }
            Self::Fixed { from, to } => from <= d && d <= to,
        }
    }
}

/// A window with its constraints parsed, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledWindow {
    pub name: String,
    pub tz: TimeZone,
    dates: Option<DateRange>,
    days: Option<Vec<Weekday>>,
    /// Minutes after local midnight: start inclusive, end exclusive (1440 = 24:00).
    times: Option<(u16, u16)>,
    pub concurrency_percent: Option<u32>,
    pub floor_percent: Option<u32>,
    pub modules: Option<Vec<String>>,
}

pub fn parse_time_zone(name: Option<&str>) -> Result<TimeZone, WindowError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| WindowError::UnknownTimeZone(n.to_string())),
    }
}

fn parse_date(window: &str, field: &'static str, value: &str) -> Result<DateBound, WindowError> {
    let bad = || WindowError::BadDate {
        window: window.to_string(),
        field,
        value: value.to_string(),
    };
    let parts: Vec<&str> = value.split('-').collect();
    let num = |s: &str| s.parse::<i16>().map_err(|_| bad());
    match parts.as_slice() {
        [m, d] if m.len() == 2 && d.len() == 2 => {
            let (m, d) = (num(m)?, num(d)?);
            // Validate against a leap year so that 02-29 is a valid yearly bound.
            Date::new(2024, m as i8, d as i8).map_err(|_| bad())?;
            Ok(DateBound::Yearly {
                month: m as i8,
                day: d as i8,
            })
        }
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            let date = Date::new(num(y)?, num(m)? as i8, num(d)? as i8).map_err(|_| bad())?;
            Ok(DateBound::Fixed(date))
        }
        _ => Err(bad()),
    }
}

fn parse_time(window: &str, field: &'static str, value: &str) -> Result<u16, WindowError> {
    let bad = || WindowError::BadTime {
        window: window.to_string(),
        field,
        value: value.to_string(),
    };
    let (h, m) = value.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl CompiledWindow {
    pub fn compile(w: &Window, tz: &TimeZone) -> Result<Self, WindowError> {
        let incomplete = |message| WindowError::Incomplete {
            window: w.name.clone(),
            message,
        };
        let dates = match (&w.from, &w.to) {
            (None, None) => None,
            (Some(f), Some(t)) => match (
                parse_date(&w.name, "from", f)?,
                parse_date(&w.name, "to", t)?,
            ) {
                (
                    DateBound::Yearly { month: fm, day: fd },
                    DateBound::Yearly { month: tm, day: td },
                ) => Some(DateRange::Yearly {
                    from: (fm, fd),
                    to: (tm, td),
                }),
                (DateBound::Fixed(from), DateBound::Fixed(to)) if from <= to => {
                    Some(DateRange::Fixed { from, to })
                }
                (DateBound::Fixed(_), DateBound::Fixed(_)) => {
                    return Err(incomplete("to is before from"));
                }
                _ => {
                    return Err(incomplete(
                        "from and to must both be MM-DD or both be YYYY-MM-DD",
                    ));
                }
            },
            _ => return Err(incomplete("from and to must be set together")),
        };
        let times = match (&w.start, &w.end) {
            (None, None) => None,
            (Some(s), Some(e)) => {
                let (s, e) = (
                    parse_time(&w.name, "start", s)?,
                    parse_time(&w.name, "end", e)?,
                );
                if s == e || s == 1440 {
                    return Err(incomplete(
                        "start and end must differ and start must be before 24:00",
                    ));
                }
                Some((s, e))
            }
            _ => return Err(incomplete("start and end must be set together")),
        };
        let days = match &w.days {
            Some(d) if d.is_empty() => return Err(incomplete("days must not be empty")),
            other => other.clone(),
        };
        if dates.is_none() && days.is_none() && times.is_none() {
            return Err(incomplete(
                "a window needs a date range (from/to), days or a time range (start/end)",
            ));
        }
        Ok(Self {
            name: w.name.clone(),
            tz: tz.clone(),
            dates,
            days,
            times,
            concurrency_percent: w.concurrency_percent.map(|p| p.max(0) as u32),
            floor_percent: w.floor_percent.map(|p| p.clamp(0, 100) as u32),
            modules: w.modules.clone(),
        })
    }

    /// Whether the window applies to a module.
    pub fn applies_to(&self, module: &str) -> bool {
        self.modules
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == module))
    }

    /// Whether the window is active at a local wall-clock time.
    pub fn active_at_civil(&self, dt: DateTime) -> bool {
        let minute = dt.hour() as u16 * 60 + dt.minute() as u16;
        // The day the current occurrence started on: yesterday for the
        // after-midnight part of a range that runs past midnight.
        let anchor = match self.times {
            None => dt.date(),
            Some((s, e)) if s < e => {
                if minute >= s && minute < e {
                    dt.date()
                } else {
                    return false;
                }
            }
            Some((s, e)) => {
                if minute >= s {
                    dt.date()
                } else if minute < e {
                    match dt.date().yesterday() {
                        Ok(d) => d,
                        Err(_) => return false,
                    }
                } else {
                    return false;
                }
            }
        };
        if let Some(days) = &self.days
            && !days.contains(&Weekday::from_jiff(anchor.weekday()))
        {
            return false;
        }
        self.dates.is_none_or(|r| r.contains(anchor))
    }

    pub fn active_at(&self, t: Timestamp) -> bool {
        self.active_at_civil(self.tz.to_datetime(t))
    }

    /// The first instant after `now` at which this window's activity changes.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        let current = self.active_at(now);
        let today = self.tz.to_datetime(now).date();
        let mut boundaries: Vec<Time> = vec![Time::midnight()];
        if let Some((s, e)) = self.times {
            for m in [s, e] {
                if m < 1440 {
                    boundaries
                        .push(Time::new((m / 60) as i8, (m % 60) as i8, 0, 0).expect("valid time"));
                }
            }
        }
        let mut day = today;
        for _ in 0..HORIZON_DAYS {
            let mut candidates: Vec<Timestamp> = Vec::with_capacity(boundaries.len() * 2 + 2);
            for b in &boundaries {
                // Both resolutions of a wall-clock boundary: in a repeated
                // (fold) hour the boundary is crossed twice.
                let amb = self.tz.to_ambiguous_timestamp(day.to_datetime(*b));
                candidates.extend(amb.earlier().ok());
                candidates.extend(amb.later().ok());
            }
            // In a skipped (gap) hour the wall clock jumps over the boundary:
            // the change happens at the offset transition itself.
            if let (Ok(start), Ok(next)) = (
                self.tz
                    .to_ambiguous_timestamp(day.to_datetime(Time::midnight()))
                    .earlier(),
                day.tomorrow().and_then(|d| {
                    self.tz
                        .to_ambiguous_timestamp(d.to_datetime(Time::midnight()))
                        .later()
                }),
            ) {
                let from = start
                    .checked_sub(jiff::SignedDuration::from_secs(1))
                    .unwrap_or(start);
                for tr in self.tz.following(from) {
                    let ts = tr.timestamp();
                    if ts > next {
                        break;
                    }
                    candidates.push(ts);
                }
            }
            candidates.sort();
            candidates.dedup();
            for c in candidates {
                if c > now && self.active_at(c) != current {
                    return Some(c);
                }
            }
            day = day.tomorrow().ok()?;
        }
        // One-off windows further away than the horizon.
        if let Some(DateRange::Fixed { from, to }) = self.dates {
            for d in [Some(from), to.tomorrow().ok()].into_iter().flatten() {
                if let Ok(c) = self
                    .tz
                    .to_ambiguous_timestamp(d.to_datetime(Time::midnight()))
                    .compatible()
                    && c > now
                    && self.active_at(c) != current
                {
                    return Some(c);
                }
            }
        }
        None
    }
}

/// Windows active at `now` and the instant at which that set next changes.
pub fn evaluate(
    windows: &[CompiledWindow],
    now: Timestamp,
) -> (Vec<&CompiledWindow>, Option<Timestamp>) {
    let active = windows.iter().filter(|w| w.active_at(now)).collect();
    let next = windows.iter().filter_map(|w| w.next_change(now)).min();
    (active, next)
}

/// RFC 3339 with the zone's offset, e.g. 2026-09-01T00:00:00+08:00.
pub fn format_instant(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(yaml: &str) -> Window {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn compile(yaml: &str, tz: &str) -> CompiledWindow {
        CompiledWindow::compile(&window(yaml), &TimeZone::get(tz).unwrap()).unwrap()
    }

    fn at(tz: &str, s: &str) -> Timestamp {
        let dt: DateTime = s.parse().unwrap();
        TimeZone::get(tz)
            .unwrap()
            .to_ambiguous_timestamp(dt)
            .compatible()
            .unwrap()
    }

    fn local(t: Timestamp, tz: &str) -> String {
        format_instant(t, &TimeZone::get(tz).unwrap())
    }

    #[test]
    fn yearly_range_is_inclusive_and_ends_at_midnight_after_to() {
        let w = compile(
            "{name: summer, from: '07-01', to: '08-31', concurrencyPercent: 200}",
            "Asia/Shanghai",
        );
        assert!(!w.active_at(at("Asia/Shanghai", "2026-06-30T23:59:59")));
        assert!(w.active_at(at("Asia/Shanghai", "2026-07-01T00:00")));
        assert!(w.active_at(at("Asia/Shanghai", "2026-08-31T23:59")));
        assert!(!w.active_at(at("Asia/Shanghai", "2026-09-01T00:00")));
        let next = w
            .next_change(at("Asia/Shanghai", "2026-07-15T12:00"))
            .unwrap();
        assert_eq!(local(next, "Asia/Shanghai"), "2026-09-01T00:00:00+08:00");
        let next = w
            .next_change(at("Asia/Shanghai", "2026-11-26T12:00"))
            .unwrap();
        assert_eq!(local(next, "Asia/Shanghai"), "2027-07-01T00:00:00+08:00");
    }

    #[test]
    fn yearly_range_across_new_year() {
        let w = compile(
            "{name: winter, from: '12-20', to: '01-05'}",
            "Europe/Berlin",
        );
        assert!(w.active_at(at("Europe/Berlin", "2026-12-31T23:00")));
        assert!(w.active_at(at("Europe/Berlin", "2027-01-01T00:30")));
        assert!(w.active_at(at("Europe/Berlin", "2027-01-05T22:00")));
        assert!(!w.active_at(at("Europe/Berlin", "2027-01-06T00:00")));
        assert!(!w.active_at(at("Europe/Berlin", "2026-12-19T23:59")));
        let next = w
            .next_change(at("Europe/Berlin", "2026-12-25T10:00"))
            .unwrap();
        assert_eq!(local(next, "Europe/Berlin"), "2027-01-06T00:00:00+01:00");
    }

    #[test]
    fn weekday_evening_window() {
        let w = compile(
            "{name: eve, days: [Mon, Tue, Wed, Thu, Fri], start: '18:00', end: '22:00'}",
            "Asia/Shanghai",
        );
        // 2026-11-27 is a Friday, 2026-11-28 a Saturday.
        assert!(w.active_at(at("Asia/Shanghai", "2026-11-27T18:00")));
        assert!(!w.active_at(at("Asia/Shanghai", "2026-11-27T22:00")));
        assert!(!w.active_at(at("Asia/Shanghai", "2026-11-28T19:00")));
        let next = w
            .next_change(at("Asia/Shanghai", "2026-11-27T23:00"))
            .unwrap();
        assert_eq!(local(next, "Asia/Shanghai"), "2026-11-30T18:00:00+08:00");
    }

    #[test]
    fn time_range_across_midnight_belongs_to_the_day_it_started() {
        let w = compile(
            "{name: late, days: [Fri], start: '22:00', end: '02:00'}",
            "UTC",
        );
        assert!(w.active_at(at("UTC", "2026-11-27T23:30"))); // Friday
        assert!(w.active_at(at("UTC", "2026-11-28T01:59"))); // Saturday morning, Friday's night
        assert!(!w.active_at(at("UTC", "2026-11-28T02:00")));
        assert!(!w.active_at(at("UTC", "2026-11-28T23:00"))); // Saturday night
        assert!(!w.active_at(at("UTC", "2026-11-27T01:00"))); // Friday morning belongs to Thursday
        let next = w.next_change(at("UTC", "2026-11-28T00:10")).unwrap();
        assert_eq!(local(next, "UTC"), "2026-11-28T02:00:00+00:00");
    }

    #[test]
    fn night_window_across_the_new_year() {
        let w = compile(
            "{name: nye, from: '12-31', to: '12-31', start: '20:00', end: '03:00'}",
            "UTC",
        );
        assert!(w.active_at(at("UTC", "2026-12-31T21:00")));
        assert!(w.active_at(at("UTC", "2027-01-01T02:59")));
        assert!(!w.active_at(at("UTC", "2027-01-01T03:00")));
        assert!(!w.active_at(at("UTC", "2027-01-01T21:00")));
    }

    #[test]
    fn dst_spring_forward_keeps_wall_clock_hours() {
        // Europe/Berlin jumps from 02:00 to 03:00 on 2027-03-28.
        let w = compile("{name: eve, start: '18:00', end: '22:00'}", "Europe/Berlin");
        let before = at("Europe/Berlin", "2027-03-27T23:00");
        let on = w.next_change(before).unwrap();
        assert_eq!(local(on, "Europe/Berlin"), "2027-03-28T18:00:00+02:00");
        // 18:00 CEST is 16:00 UTC; the day before it was 17:00 UTC.
        assert_eq!(on.to_string(), "2027-03-28T16:00:00Z");
        let off = w.next_change(on).unwrap();
        assert_eq!(local(off, "Europe/Berlin"), "2027-03-28T22:00:00+02:00");
    }

    #[test]
    fn dst_gap_boundary_changes_at_the_jump() {
        // 02:30 does not exist on 2027-03-28 in Berlin: the window starts when
        // the clock jumps to 03:00.
        let w = compile(
            "{name: night, start: '02:30', end: '05:00'}",
            "Europe/Berlin",
        );
        let next = w
            .next_change(at("Europe/Berlin", "2027-03-28T01:00"))
            .unwrap();
        assert_eq!(local(next, "Europe/Berlin"), "2027-03-28T03:00:00+02:00");
    }

    #[test]
    fn dst_fall_back_window_length_follows_the_wall_clock() {
        // New York falls back at 02:00 on 2026-11-01: 00:00-04:00 lasts 5 hours.
        let w = compile(
            "{name: n, start: '00:00', end: '04:00'}",
            "America/New_York",
        );
        let start = at("America/New_York", "2026-11-01T00:00");
        let end = w.next_change(start).unwrap();
        assert_eq!(end.duration_since(start).as_secs(), 5 * 3600);
        assert_eq!(local(end, "America/New_York"), "2026-11-01T04:00:00-05:00");
    }

    #[test]
    fn fixed_dates_far_ahead_are_found() {
        let w = compile("{name: expo, from: '2028-05-01', to: '2028-05-03'}", "UTC");
        let next = w.next_change(at("UTC", "2026-11-26T00:00")).unwrap();
        assert_eq!(local(next, "UTC"), "2028-05-01T00:00:00+00:00");
        let next = w.next_change(next).unwrap();
        assert_eq!(local(next, "UTC"), "2028-05-04T00:00:00+00:00");
        assert_eq!(w.next_change(next), None);
    }

    #[test]
    fn leap_day_yearly_bound() {
        let w = compile("{name: leap, from: '02-29', to: '03-01'}", "UTC");
        assert!(w.active_at(at("UTC", "2028-02-29T12:00")));
        assert!(w.active_at(at("UTC", "2027-03-01T12:00")));
        assert!(!w.active_at(at("UTC", "2027-02-28T12:00")));
    }

    #[test]
    fn invalid_inputs_are_named() {
        let tz = TimeZone::UTC;
        let e = CompiledWindow::compile(&window("{name: w, from: '02-30', to: '03-01'}"), &tz)
            .unwrap_err();
        assert!(e.to_string().contains("from \"02-30\""), "{e}");
        let e = CompiledWindow::compile(
            &window("{name: w, from: '2027-02-29', to: '2027-03-01'}"),
            &tz,
        )
        .unwrap_err();
        assert!(e.to_string().contains("2027-02-29"), "{e}");
        let e = CompiledWindow::compile(&window("{name: w, start: '25:00', end: '03:00'}"), &tz)
            .unwrap_err();
        assert!(e.to_string().contains("start"), "{e}");
        let e = CompiledWindow::compile(&window("{name: w, from: '07-01'}"), &tz).unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let e = CompiledWindow::compile(&window("{name: w, floorPercent: 10}"), &tz).unwrap_err();
        assert!(e.to_string().contains("needs"), "{e}");
        assert!(matches!(
            parse_time_zone(Some("Mars/Olympus")),
            Err(WindowError::UnknownTimeZone(_))
        ));
    }
}
