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

#[cfg(test)]
thread_local! {
    /// Days `next_change` examined for instants of change, on this thread.
    static EXAMINED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

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
    ///
    /// Days are examined one by one, over a horizon of `HORIZON_DAYS`,
    /// through the instants at which a change can happen (see
    /// [`Self::change_on`]); that costs a dozen time-zone conversions per
    /// day. Days on which nothing can change are first found in civil time
    /// and skipped (see [`Self::quiet_days`]), so a window that opens once a
    /// year costs one examined day, not the whole year: the answer is the
    /// same, at a fraction of the cost (a subscription may have a thousand
    /// windows).
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        self.next_change_before(now, None)
    }

    /// [`Self::next_change`] when it comes before `limit`; when it does not,
    /// `None` or the change itself. The earliest change of many windows
    /// needs no search past the earliest found so far.
    pub fn next_change_before(
        &self,
        now: Timestamp,
        limit: Option<Timestamp>,
    ) -> Option<Timestamp> {
        let wall_clock = self.tz.to_datetime(now);
        let current = self.active_at_civil(wall_clock);
        let today = wall_clock.date();
        let boundaries = self.boundaries();
        let mut offset = 0;
        while offset < HORIZON_DAYS {
            let day = today.checked_add(jiff::Span::new().days(offset)).ok()?;
            // Every instant examined for `day` comes after midnight UTC
            // three days before (an offset and a change of it move the wall
            // clock by less than two days).
            if let Some(limit) = limit
                && utc_midnight(day, -3).is_none_or(|t| t >= limit)
            {
                return None;
            }
            let quiet = self.quiet_days(day, current);
            if quiet > 0 {
                offset += quiet;
                continue;
            }
            #[cfg(test)]
            EXAMINED.with(|n| n.set(n.get() + 1));
            if let Some(c) = self.change_on(day, now, current, &boundaries) {
                return Some(c);
            }
            offset += 1;
        }
        self.beyond_horizon(now, current)
    }

    /// One-off windows further away than the horizon.
    fn beyond_horizon(&self, now: Timestamp, current: bool) -> Option<Timestamp> {
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

    /// The wall-clock times of day at which the activity can change:
    /// midnight, and the start and end of the time range.
    fn boundaries(&self) -> Vec<Time> {
        let mut boundaries: Vec<Time> = vec![Time::midnight()];
        if let Some((s, e)) = self.times {
            for m in [s, e] {
                if m < 1440 {
                    boundaries
                        .push(Time::new((m / 60) as i8, (m % 60) as i8, 0, 0).expect("valid time"));
                }
            }
        }
        boundaries
    }

    /// The first instant after `now` among those of `day` at which the
    /// window's activity differs from `current`. The instants are those at
    /// which the wall clock passes a boundary on that day, and the time
    /// zone's offset transitions from that day's midnight to the next.
    fn change_on(
        &self,
        day: Date,
        now: Timestamp,
        current: bool,
        boundaries: &[Time],
    ) -> Option<Timestamp> {
        let mut candidates: Vec<Timestamp> = Vec::with_capacity(boundaries.len() * 2 + 2);
        for b in boundaries {
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
        candidates
            .into_iter()
            .find(|&c| c > now && self.active_at(c) != current)
    }

    /// The activity on every wall-clock minute of civil day `day` when it
    /// is the same all day, `None` when it changes during the day. Civil
    /// time only: no time-zone lookups.
    fn all_day(&self, day: Date) -> Option<bool> {
        // Activity is constant between consecutive boundaries (midnight,
        // start, end): it is enough to look at each boundary.
        let first = self.active_at_civil(day.to_datetime(Time::midnight()));
        if let Some((s, e)) = self.times {
            for m in [s, e] {
                if m < 1440 {
                    let t = Time::new((m / 60) as i8, (m % 60) as i8, 0, 0).expect("valid time");
                    if self.active_at_civil(day.to_datetime(t)) != first {
                        return None;
                    }
                }
            }
        }
        Some(first)
    }

    /// How many days from `day` on [`Self::change_on`] would certainly find
    /// nothing (0: examine `day`). A day's instants all show the wall clock
    /// of that day or, around an offset transition, of a neighbouring day
    /// (no transition moves the clock by more than a day). So a day is
    /// skipped when the activity is `current` all day on it and on the two
    /// days either side, and then so is the run of days until the date
    /// constraints next may change (see [`Self::date_constant_until`]),
    /// found without walking the days. A day on which the activity is
    /// `current` all day is skipped too when the offset does not change
    /// within a few days of it: its instants then show its own wall clock.
    fn quiet_days(&self, day: Date, current: bool) -> i32 {
        let all_day = |k: i32| {
            day.checked_add(jiff::Span::new().days(k))
                .ok()
                .and_then(|d| self.all_day(d))
                == Some(current)
        };
        if !all_day(0) {
            return 0;
        }
        if [-2, -1, 1, 2].into_iter().all(all_day) {
            // The day's activity depends on the date constraints of that
            // day and the day before; they hold still on [day, until), so
            // the activity is `current` all day on [day - 2, until - 1], and
            // the days up to until - 3 have two quiet days either side.
            return match self.date_constant_until(day) {
                None => HORIZON_DAYS,
                Some(until) => (day.until(until).map(|s| s.get_days()).unwrap_or(0) - 2).max(1),
            };
        }
        let steady = match (utc_midnight(day, -3), utc_midnight(day, 4)) {
            (Some(from), Some(to)) => self
                .tz
                .following(from)
                .next()
                .is_none_or(|t| t.timestamp() > to),
            _ => false,
        };
        i32::from(steady)
    }

    /// Whether the date constraints (date range and weekdays) hold on `day`.
    fn date_ok(&self, day: Date) -> bool {
        self.days
            .as_ref()
            .is_none_or(|days| days.contains(&Weekday::from_jiff(day.weekday())))
            && self.dates.is_none_or(|r| r.contains(day))
    }

    /// A day after `day` up to which (exclusive) the date constraints give
    /// the same answer as on `day`; `None` when they never change. Not
    /// necessarily the first change: any earlier bound is correct too.
    fn date_constant_until(&self, day: Date) -> Option<Date> {
        let every_day = self.days.as_ref().is_none_or(|days| {
            [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ]
            .iter()
            .all(|d| days.contains(d))
        });
        let in_range = self.dates.is_none_or(|r| r.contains(day));
        if !every_day && in_range {
            // The weekdays decide, day by day.
            return day.tomorrow().ok().or(Some(day));
        }
        debug_assert!(every_day || !self.date_ok(day));
        match self.dates {
            // Every day, always.
            None => None,
            // Out of the range (the weekdays do not matter then) or in it
            // on every weekday: what matters is when the range begins or ends.
            Some(range) => range.next_change(day),
        }
    }
}

impl DateRange {
    /// A day after `day` up to which (exclusive) `contains` gives the same
    /// answer as on `day`; `None` when it never changes again.
    fn next_change(&self, day: Date) -> Option<Date> {
        match *self {
            Self::Fixed { from, to } => {
                if day < from {
                    Some(from)
                } else if day <= to {
                    to.tomorrow().ok()
                } else {
                    None
                }
            }
            Self::Yearly { from, to } => {
                // Within a year, `contains` changes only on the first day on
                // or after `from`, on the first day after `to`, and at the
                // turn of the year.
                let on_or_after = |y: i16, (m, d): (i8, i8)| {
                    Date::new(y, m, d).or_else(|_| Date::new(y, 3, 1)).ok()
                };
                let after = |y: i16, (m, d): (i8, i8)| match Date::new(y, m, d) {
                    Ok(date) => date.tomorrow().ok(),
                    Err(_) => Date::new(y, 3, 1).ok(),
                };
                let year = day.year();
                (year..=year.saturating_add(2))
                    .flat_map(|y| [on_or_after(y, from), after(y, to), Date::new(y, 1, 1).ok()])
                    .flatten()
                    .filter(|c| *c > day)
                    .min()
            }
        }
    }
}

/// Windows active at `now` and the instant at which that set next changes.
pub fn evaluate(
    windows: &[CompiledWindow],
    now: Timestamp,
) -> (Vec<&CompiledWindow>, Option<Timestamp>) {
    let active = windows.iter().filter(|w| w.active_at(now)).collect();
    let mut next: Option<Timestamp> = None;
    for w in windows {
        if let Some(c) = w.next_change_before(now, next) {
            next = Some(next.map_or(c, |n| n.min(c)));
        }
    }
    (active, next)
}

/// Midnight UTC `days` after civil date `day`.
fn utc_midnight(day: Date, days: i32) -> Option<Timestamp> {
    let d = day.checked_add(jiff::Span::new().days(days)).ok()?;
    jiff::tz::Offset::UTC
        .to_timestamp(d.to_datetime(Time::midnight()))
        .ok()
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

    /// The search as it was before quiet days were skipped: every day of
    /// the horizon examined, one by one.
    fn next_change_day_by_day(w: &CompiledWindow, now: Timestamp) -> Option<Timestamp> {
        let current = w.active_at(now);
        let mut day = w.tz.to_datetime(now).date();
        let boundaries = w.boundaries();
        for _ in 0..HORIZON_DAYS {
            if let Some(c) = w.change_on(day, now, current, &boundaries) {
                return Some(c);
            }
            day = day.tomorrow().ok()?;
        }
        w.beyond_horizon(now, current)
    }

    /// Days `f` made `next_change` examine, and its result.
    fn examined<T>(f: impl FnOnce() -> T) -> (u64, T) {
        let before = EXAMINED.with(|n| n.get());
        let out = f();
        (EXAMINED.with(|n| n.get()) - before, out)
    }

    /// Windows of every shape: yearly ranges (within a year, over the new
    /// year, a single day, on a leap day), one-off ranges (past, near, beyond
    /// the horizon), weekdays, time ranges (within a day, past midnight, the
    /// whole day, boundaries in the hours DST skips or repeats), always on.
    const SHAPES: &[&str] = &[
        "{name: a, from: '07-01', to: '08-31'}",
        "{name: a, from: '12-20', to: '01-05'}",
        "{name: a, from: '11-11', to: '11-11'}",
        "{name: a, from: '02-29', to: '03-01'}",
        "{name: a, from: '03-01', to: '02-28'}",
        "{name: a, from: '03-29', to: '03-29', start: '02:30', end: '03:30'}",
        "{name: a, from: '10-25', to: '11-01', start: '01:30', end: '02:30'}",
        "{name: a, from: '06-01', to: '09-30', days: [Sat, Sun]}",
        "{name: a, from: '04-01', to: '04-30', start: '00:00', end: '24:00'}",
        "{name: a, from: '09-01', to: '09-30', start: '22:00', end: '02:00', days: [Fri]}",
        "{name: a, from: '2020-01-01', to: '2020-12-31'}",
        "{name: a, from: '2027-03-27', to: '2027-03-29', start: '01:00', end: '03:00'}",
        "{name: a, from: '2029-05-01', to: '2029-05-03'}",
        "{name: a, days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]}",
        "{name: a, days: [Sun], start: '02:00', end: '03:00'}",
        "{name: a, start: '23:30', end: '00:30'}",
        "{name: a, start: '00:00', end: '24:00'}",
        "{name: a, days: [Mon, Tue, Wed, Thu, Fri], start: '18:00', end: '22:00'}",
    ];

    /// Zones with the offset changes that matter: DST in both hemispheres,
    /// a half-hour DST, a negative DST, a skipped day, none.
    const ZONES: &[&str] = &[
        "UTC",
        "Asia/Shanghai",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Europe/Dublin",
        "America/Santiago",
        "Pacific/Apia",
    ];

    #[test]
    fn skipping_quiet_days_finds_the_same_change_around_every_offset_transition() {
        let mut compared = 0;
        for zone in ZONES {
            let tz = TimeZone::get(zone).unwrap();
            // Every offset transition of 2026 to 2028 (and for Apia the day
            // it skipped in 2011), and instants around each.
            let mut instants: Vec<Timestamp> = tz
                .following(at("UTC", "2025-12-31T00:00"))
                .map(|t| t.timestamp())
                .take_while(|t| *t < at("UTC", "2029-01-01T00:00"))
                .collect();
            instants.push(at("UTC", "2011-12-30T10:00"));
            instants.push(at("UTC", "2026-06-15T12:00"));
            for t in instants {
                for delta in [-172_800, -86_400, -3_600, -1, 0, 1, 1_800, 3_600, 86_400] {
                    let now = Timestamp::from_second(t.as_second() + delta).unwrap();
                    for shape in SHAPES {
                        let w = compile(shape, zone);
                        assert_eq!(
                            w.next_change(now),
                            next_change_day_by_day(&w, now),
                            "{shape} in {zone} at {now}"
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 5_000, "{compared}");
    }

    #[test]
    fn skipping_quiet_days_finds_the_same_change_all_year_round() {
        // Every 61 hours and 7 minutes over two years: every weekday, every
        // time of day, every season.
        for zone in ["Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"] {
            let mut now = at(zone, "2026-01-01T00:00");
            while now < at(zone, "2028-01-01T00:00") {
                for shape in SHAPES {
                    let w = compile(shape, zone);
                    assert_eq!(
                        w.next_change(now),
                        next_change_day_by_day(&w, now),
                        "{shape} in {zone} at {now}"
                    );
                }
                now = Timestamp::from_second(now.as_second() + 61 * 3600 + 7 * 60).unwrap();
            }
        }
    }

    #[test]
    fn overlapping_windows_change_at_the_first_change_of_any() {
        let zone = "Europe/Berlin";
        let windows: Vec<CompiledWindow> = SHAPES
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut w = compile(s, zone);
                w.name = format!("w{i}");
                w
            })
            .collect();
        for s in [
            "2026-03-28T12:00",
            "2026-07-15T12:00",
            "2026-10-25T02:30",
            "2026-12-31T23:59",
        ] {
            let now = at(zone, s);
            let (active, next) = evaluate(&windows, now);
            let want = windows
                .iter()
                .filter_map(|w| next_change_day_by_day(w, now))
                .min();
            assert_eq!(next, want, "at {s}");
            let names: Vec<&str> = active.iter().map(|w| w.name.as_str()).collect();
            let want: Vec<&str> = windows
                .iter()
                .filter(|w| w.active_at(now))
                .map(|w| w.name.as_str())
                .collect();
            assert_eq!(names, want);
        }
    }

    #[test]
    fn a_window_far_away_costs_a_few_days_not_the_year() {
        // Opens in 8 months; before, each of the 230-odd days was examined.
        let w = compile(
            "{name: summer, from: '07-01', to: '08-31'}",
            "Europe/Berlin",
        );
        let now = at("Europe/Berlin", "2026-11-02T12:00");
        let (days, next) = examined(|| w.next_change(now));
        assert_eq!(
            local(next.unwrap(), "Europe/Berlin"),
            "2027-07-01T00:00:00+02:00"
        );
        // The day it opens, and none of the 241 days before it.
        assert_eq!(days, 1, "{days} days examined");
        // Always on, or over for good: nothing to find, nothing examined.
        for shape in [
            "{name: a, days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]}",
            "{name: a, from: '2020-01-01', to: '2020-12-31'}",
        ] {
            let w = compile(shape, "America/New_York");
            let (days, next) = examined(|| w.next_change(now));
            assert_eq!(next, None, "{shape}");
            assert_eq!(days, 0, "{shape}");
        }
        // Weekday evenings: found within the week as before.
        let w = compile(
            "{name: eve, days: [Mon, Tue, Wed, Thu, Fri], start: '18:00', end: '22:00'}",
            "Asia/Shanghai",
        );
        let friday = at("Asia/Shanghai", "2026-11-27T23:00");
        let (days, next) = examined(|| w.next_change(friday));
        assert_eq!(
            local(next.unwrap(), "Asia/Shanghai"),
            "2026-11-30T18:00:00+08:00"
        );
        // Friday and Monday; the weekend is skipped.
        assert_eq!(days, 2, "{days} days examined");
        // Among many windows, those that change later than the earliest
        // found so far are not examined at all.
        let mut windows = vec![w];
        for zone in ZONES {
            windows.push(compile("{name: summer, from: '07-01', to: '08-31'}", zone));
        }
        let (days, (_, next)) = examined(|| evaluate(&windows, friday));
        assert_eq!(
            local(next.unwrap(), "Asia/Shanghai"),
            "2026-11-30T18:00:00+08:00"
        );
        assert_eq!(days, 2, "{days} days examined");
    }

    fn any_window() -> impl proptest::strategy::Strategy<Value = Window> {
        use proptest::prelude::*;
        let date = prop_oneof![
            (1u8..=12, 1u8..=29).prop_map(|(m, d)| format!("{m:02}-{d:02}")),
            (1990u16..=2060, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| format!("{y}-{m:02}-{d:02}")),
        ];
        let weekday = prop_oneof![
            Just(Weekday::Mon),
            Just(Weekday::Tue),
            Just(Weekday::Wed),
            Just(Weekday::Thu),
            Just(Weekday::Fri),
            Just(Weekday::Sat),
            Just(Weekday::Sun)
        ];
        (
            proptest::option::of((date.clone(), date)),
            proptest::option::of(proptest::collection::vec(weekday, 1..8)),
            proptest::option::of((0u16..1440, 0u16..=1440)),
        )
            .prop_map(|(dates, days, times)| {
                let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
                let (from, to) = match dates {
                    // Both yearly or both one-off, in order.
                    Some((a, b)) if a.len() == b.len() => {
                        (Some(a.clone().min(b.clone())), Some(a.max(b)))
                    }
                    Some((a, _)) => (Some(a.clone()), Some(a)),
                    None => (None, None),
                };
                Window {
                    name: "w".into(),
                    from,
                    to,
                    days,
                    start: times.map(|(s, _)| hm(s)),
                    end: times.map(|(_, e)| hm(e)),
                    ..Default::default()
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        #[test]
        fn skipping_quiet_days_finds_the_same_change_as_examining_every_day(
            w in any_window(),
            zone in proptest::sample::select(ZONES),
            at in 0i64..4_000_000_000,
        ) {
            let tz = TimeZone::get(zone).unwrap();
            let Ok(w) = CompiledWindow::compile(&w, &tz) else { return Ok(()) };
            let now = Timestamp::from_second(at).unwrap();
            proptest::prop_assert_eq!(w.next_change(now), next_change_day_by_day(&w, now));
        }

        #[test]
        fn many_windows_change_at_the_first_change_of_any(
            ws in proptest::collection::vec((any_window(), proptest::sample::select(ZONES)), 1..8),
            at in 0i64..4_000_000_000,
        ) {
            let windows: Vec<CompiledWindow> = ws
                .iter()
                .filter_map(|(w, zone)| CompiledWindow::compile(w, &TimeZone::get(zone).unwrap()).ok())
                .collect();
            let now = Timestamp::from_second(at).unwrap();
            let want = windows.iter().filter_map(|w| next_change_day_by_day(w, now)).min();
            proptest::prop_assert_eq!(evaluate(&windows, now).1, want);
        }
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
