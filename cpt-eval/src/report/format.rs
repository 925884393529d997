//! How numbers and text are written in the report.

/// A metric value with about four significant digits (`1030`, `482.8`, `6.94`, `0.958`).
pub fn value(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "—".to_string()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// An axis tick: as few digits as tell ticks apart (`7`, `6.5`, `0.25`, `1000`).
pub fn tick(v: f64) -> String {
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// A value with its sign (`+30.2`, `−43.3`), for differences.
pub fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", value(v))
    } else {
        value(v).replacen('-', "−", 1)
    }
}

/// A learning rate or other small number (`3e-3`, `1.5e-4`).
pub fn scientific(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let text = format!("{v:.1e}");
    text.replace(".0e", "e")
}

/// An integer with thousands separators (`921,600`).
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration (`0.5 s`, `42.7 s`, `3 min 05 s`, `2 h 07 min`).
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

/// `text` safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_written_by_hand() {
        assert_eq!(value(1030.08), "1030");
        assert_eq!(value(482.807), "482.8");
        assert_eq!(value(6.9412), "6.941");
        assert_eq!(tick(7.0), "7");
        assert_eq!(tick(6.5), "6.5");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(1000.0), "1000");
        assert_eq!(signed(30.23), "+30.23");
        assert_eq!(signed(-43.26), "−43.26");
        assert_eq!(scientific(0.003), "3e-3");
        assert_eq!(scientific(0.00015), "1.5e-4");
        assert_eq!(count(921_600), "921,600");
        assert_eq!(count(64), "64");
        assert_eq!(duration(42.71), "42.7 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(7620.0), "2 h 07 min");
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
