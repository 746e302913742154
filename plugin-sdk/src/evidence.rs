//! How evidence reads: lists, ages and spans of packet time, written the same way by every model.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt::Display;

const MICROS: u64 = 1_000_000;

/// The first `shown` items joined by commas, then `and N more`: `10.0.0.1, 10.0.0.2 and 30
/// more`. Empty when there are none.
pub fn listed<T: Display>(items: impl IntoIterator<Item = T>, shown: usize) -> String {
    let mut text = String::new();
    let mut count = 0usize;
    for item in items {
        if count < shown {
            if count > 0 {
                text.push_str(", ");
            }
            text.push_str(&item.to_string());
        }
        count += 1;
    }
    if count > shown {
        text.push_str(&format!(" and {} more", count - shown));
    }
    text
}

/// [`listed`], or `none` (`"none seen"`...) when there are none.
pub fn listed_or<T: Display>(
    items: impl IntoIterator<Item = T>,
    shown: usize,
    none: &str,
) -> String {
    let text = listed(items, shown);
    match text.is_empty() {
        true => none.to_string(),
        false => text,
    }
}

/// How long ago something was, coarsely: `45 s ago`, `3 days ago`.
pub fn ago(micros: u64) -> String {
    let secs = micros / MICROS;
    if secs >= 86_400 {
        format!("{} days ago", secs / 86_400)
    } else {
        format!("{secs} s ago")
    }
}

/// A span as a person says it: `45 s`, `3 min 20 s`, `1 h 4 min`.
pub fn duration(micros: u64) -> String {
    let secs = micros / MICROS;
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// A span in seconds, to the millisecond when under one (a client's usual connection).
pub fn seconds(micros: u64) -> String {
    let secs = micros as f64 / 1e6;
    if micros < MICROS {
        format!("{secs:.3} s")
    } else {
        format!("{secs:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_stop_at_what_is_shown_and_count_the_rest() {
        assert_eq!(listed([1, 2, 3], 8), "1, 2, 3");
        assert_eq!(listed(1..=10, 2), "1, 2 and 8 more");
        assert_eq!(listed(core::iter::empty::<u8>(), 2), "");
        assert_eq!(listed_or(core::iter::empty::<u8>(), 2, "none"), "none");
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(duration(45 * MICROS), "45 s");
        assert_eq!(duration(200 * MICROS), "3 min 20 s");
        assert_eq!(duration(3840 * MICROS), "1 h 4 min");
        assert_eq!(ago(3 * 86_400 * MICROS), "3 days ago");
        assert_eq!(seconds(1500), "0.002 s");
        assert_eq!(seconds(12_340_000), "12.3 s");
    }
}
