//! Sizes as docker prints them.

/// docker's `units.HumanSizeWithPrecision(size, 3)` (what `docker images` shows): decimal units
/// (`B`, `kB`, `MB`, …) and Go's `%.3g`, e.g. `12.3MB`, `999kB`, `1e+03kB` (sic, as docker).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(size, 3), UNITS[i])
}

/// Go's `%.{prec}g` for a non-negative finite value: `prec` significant digits, exponent form
/// when the exponent is < -4 or ≥ prec, trailing zeros removed.
pub fn go_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    // Rounding to `prec` digits first decides the exponent (999.6 → 1.00e+03).
    let e_form = format!("{:.*e}", prec.saturating_sub(1), v);
    let (mantissa, exp) = e_form.split_once('e').unwrap_or((&e_form, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let m = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.abs());
    }
    let decimals = (prec as i32 - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(7_654_321), "7.65MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(999_600), "1e+03kB");
        assert_eq!(human_size(1_234_567_890), "1.23GB");
    }

    #[test]
    fn go_g_formats_like_go() {
        assert_eq!(go_g(0.0001234, 3), "0.000123");
        assert_eq!(go_g(0.00001234, 3), "1.23e-05");
        assert_eq!(go_g(100.0, 3), "100");
        assert_eq!(go_g(2.50, 3), "2.5");
    }
}
