//! Byte counts on the command line: the one rule every byte-count flag
//! follows (plain numbers, K/M/G and KiB/MiB/GiB, all powers of 1024), its
//! clap value parsers, and how sizes are written back in messages
//! (`1,048,576 bytes (1 MiB)`).
//!
//! K means 1024, as in `ulimit`, `free -k`, `ls -h`, Redis' `kb` and most
//! memory settings users meet. `KB`, `MB` and `GB` are refused: some tools
//! read them as powers of 1000, others of 1024, and a limit off by 5 % is
//! the kind of surprise a flag must not hold.

use std::fmt;

/// The accepted forms, as every size error ends.
pub(crate) const SIZE_FORMS: &str =
    "a byte count such as 65536, or a number with K, M, G or KiB, MiB, GiB (powers of 1024: 64K = 65536)";

/// Why a byte count was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SizeError {
    /// Not a number followed by a known unit.
    Form,
    /// `KB`, `MB`, `GB`: ambiguous between 1000 and 1024.
    Ambiguous(String),
    /// Too large for this machine's `usize`, or for the flag's type.
    TooLarge,
    /// Below the flag's minimum.
    Below(u64),
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Form => write!(f, "expected {SIZE_FORMS}."),
            SizeError::Ambiguous(unit) => {
                let binary = format!("{}iB", &unit[..1].to_ascii_uppercase());
                write!(
                    f,
                    "{unit} is ambiguous (1000 or 1024?): write {binary} or a plain byte count; expected {SIZE_FORMS}."
                )
            }
            SizeError::TooLarge => write!(f, "too large; expected {SIZE_FORMS}."),
            SizeError::Below(min) => write!(f, "must be at least {min} ({}).", bytes(*min)),
        }
    }
}

/// Reads `64MiB`, `64M`, `64 m`, `65536` or `65536B` as a number of bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(SizeError::Form);
    }
    let shift = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "kb" | "mb" | "gb" => return Err(SizeError::Ambiguous(unit.trim_start().to_owned())),
        _ => return Err(SizeError::Form),
    };
    let number: u64 = number.parse().map_err(|_| SizeError::TooLarge)?;
    number.checked_mul(1 << shift).ok_or(SizeError::TooLarge)
}

/// A clap value parser for a byte-count flag of type `T`, at least `min`.
pub(crate) fn size_at_least<T>(min: u64) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64>,
{
    move |text| {
        let n = parse_size(text).map_err(|e| e.to_string())?;
        if n < min {
            return Err(SizeError::Below(min).to_string());
        }
        T::try_from(n).map_err(|_| SizeError::TooLarge.to_string())
    }
}

/// `1,048,576 bytes (1 MiB)`, `12 bytes`: exact, then readable.
pub(crate) fn bytes(n: u64) -> String {
    let exact = format!("{} byte{}", thousands(n), if n == 1 { "" } else { "s" });
    match human(n) {
        Some(h) => format!("{exact} ({h})"),
        None => exact,
    }
}

/// `1 MiB`, `1.5 KiB`; `None` under 1 KiB, where the exact figure says it all.
fn human(n: u64) -> Option<String> {
    let (unit, size) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)].into_iter().find(|&(_, s)| n >= s)?;
    let tenths = (n * 10 + size / 2) / size;
    Some(if tenths.is_multiple_of(10) {
        format!("{} {unit}", tenths / 10)
    } else {
        format!("{}.{} {unit}", tenths / 10, tenths % 10)
    })
}

/// `1048576` → `1,048,576`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_form_reads_as_its_bytes() {
        for (text, n) in [
            ("0", 0),
            ("65536", 65536),
            ("65536B", 65536),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("64KiB", 64 << 10),
            ("64 kib", 64 << 10),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("1G", 1 << 30),
            ("3GiB", 3 << 30),
            (" 2m ", 2 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
    }

    #[test]
    fn anything_else_is_refused_naming_the_forms() {
        for text in ["", "MiB", "64XB", "-1", "1.5M", "64 parsecs", "0x10", "1T"] {
            let e = parse_size(text).unwrap_err();
            assert_eq!(e, SizeError::Form, "{text}");
            assert_eq!(
                e.to_string(),
                "expected a byte count such as 65536, or a number with K, M, G or KiB, MiB, GiB (powers of 1024: \
                 64K = 65536)."
            );
        }
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("17179869184G"), Err(SizeError::TooLarge));
        let e = parse_size("64MB").unwrap_err();
        assert_eq!(e, SizeError::Ambiguous("MB".into()));
        assert!(e.to_string().starts_with("MB is ambiguous (1000 or 1024?): write MiB or a plain byte count;"), "{e}");
    }

    #[test]
    fn the_value_parser_applies_the_minimum_and_the_type() {
        let parse = size_at_least::<u32>(64);
        assert_eq!(parse("1MiB"), Ok(1 << 20));
        assert_eq!(parse("64"), Ok(64));
        assert_eq!(parse("63"), Err("must be at least 64 (64 bytes).".into()));
        assert_eq!(parse("4G").unwrap_err(), SizeError::TooLarge.to_string());
        let parse = size_at_least::<usize>(12);
        assert_eq!(parse("64MiB"), Ok(64 << 20));
    }

    #[test]
    fn sizes_are_written_exactly_then_readably() {
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(bytes(1024), "1,024 bytes (1 KiB)");
        assert_eq!(bytes(1_047_527), "1,047,527 bytes (1023 KiB)");
        assert_eq!(bytes(1_048_576), "1,048,576 bytes (1 MiB)");
        assert_eq!(bytes(2_000_000), "2,000,000 bytes (1.9 MiB)");
        assert_eq!(bytes(3 << 30), "3,221,225,472 bytes (3 GiB)");
    }
}
