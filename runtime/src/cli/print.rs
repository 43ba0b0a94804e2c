//! How command output is printed: JSON (`--json`) or a line of text, and
//! times as UTC dates.

use serde_json::Value;

use super::escape::json_text;

pub fn print_json(value: &Value) {
    println!(
        "{}",
        json_text(&serde_json::to_string_pretty(value).unwrap_or_default())
    );
}

pub fn report(json: bool, body: &Value, text: impl FnOnce() -> String) {
    if json {
        print_json(body);
    } else {
        println!("{}", text());
    }
}

pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
