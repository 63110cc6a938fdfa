//! [`Compression`]: the quantization scheme a publishing peer applies to its deltas
//! (`train.delta_compression`), and its text form (`none`, `bf16`, `int8`, `topk:2%:2bit`),
//! which config files, lab files and flags all use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a publishing peer quantizes its deltas (`train.delta_compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Deltas go out as computed (4 bytes per parameter).
    #[default]
    None,
    /// Round each value to bfloat16 (2 bytes per parameter; 8 significant bits).
    Bf16,
    /// Blocks of [`BLOCK`](super::BLOCK) values share a power-of-two scale; each value is an
    /// integer in [-127, 127] times it (≈ 1 byte per parameter).
    Int8,
    /// Sparse low-bit deltas: in each chunk of [`CHUNK`](super::CHUNK) values only the
    /// `density` largest in magnitude are sent, each as a signed integer of magnitude
    /// 1..=2^(bits-1) times one scale per chunk; the rest waits in the residual (≈ 2% × (1 byte
    /// + 2 bits) per parameter at the default `topk:2%:2bit`).
    TopK {
        /// Share of each chunk sent, in basis points (1..=10000; 200 = 2%).
        density_bp: u16,
        /// Bits per sent value, sign included: 2 (magnitudes 1, 2) or 4 (magnitudes 1..=8).
        bits: u8,
    },
}

impl Compression {
    /// `topk` without parameters: 2% of each chunk, 2 bits per value.
    pub const TOPK_DEFAULT: Compression = Compression::TopK {
        density_bp: 200,
        bits: 2,
    };
}

/// The forms [`Compression::from_str`] accepts, for error messages.
const ACCEPTED: &str = "accepted: none, bf16, int8, topk, topk:P%, topk:P%:Bbit \
                        (P in (0, 100] with at most two decimals, B = 2 or 4; e.g. topk:2%:2bit)";

/// A `train.delta_compression` text that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delta_compression `{text}`: {reason}; {ACCEPTED}")]
pub struct CompressionParseError {
    /// The text as given.
    text: String,
    /// What is wrong with it.
    reason: String,
}

impl FromStr for Compression {
    type Err = CompressionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| CompressionParseError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        match text {
            "none" => return Ok(Compression::None),
            "bf16" => return Ok(Compression::Bf16),
            "int8" => return Ok(Compression::Int8),
            _ => {}
        }
        let mut parts = text.split(':');
        if parts.next() != Some("topk") {
            return Err(err("unknown scheme"));
        }
        let density_bp = match parts.next() {
            None => 200,
            Some(p) => parse_percent(p).map_err(|r| err(&r))?,
        };
        let bits = match parts.next() {
            None => 2,
            Some("2bit") => 2,
            Some("4bit") => 4,
            Some(_) => return Err(err("bits must be 2bit or 4bit")),
        };
        if parts.next().is_some() {
            return Err(err("too many `:` parts"));
        }
        Ok(Compression::TopK { density_bp, bits })
    }
}

/// `"1.5%"` → 150 basis points, in 1..=10000.
fn parse_percent(p: &str) -> Result<u16, String> {
    let number = p
        .strip_suffix('%')
        .ok_or_else(|| "density must end in % (e.g. 2%)".to_string())?;
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(frac)
        || (number.contains('.') && frac.is_empty())
    {
        return Err("density must be a number of percent (e.g. 2% or 1.5%)".into());
    }
    if frac.len() > 2 {
        return Err("density has at most two decimals (0.01% steps)".into());
    }
    let out_of_range = || "density must be in (0%, 100%]".to_string();
    // Leading zeros aside, more than three digits before the point is above 100%.
    let whole = whole.trim_start_matches('0');
    if whole.len() > 3 {
        return Err(out_of_range());
    }
    // Both parse: at most three and two ASCII digits (an empty whole part is 0).
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| out_of_range())?
    };
    let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| out_of_range())?;
    let bp = whole * 100 + frac;
    if bp == 0 || bp > 10_000 {
        return Err(out_of_range());
    }
    u16::try_from(bp).map_err(|_| out_of_range())
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Bf16 => f.write_str("bf16"),
            Compression::Int8 => f.write_str("int8"),
            Compression::TopK { density_bp, bits } => {
                let (whole, frac) = (density_bp / 100, density_bp % 100);
                match (frac, frac % 10) {
                    (0, _) => write!(f, "topk:{whole}%:{bits}bit"),
                    (_, 0) => write!(f, "topk:{whole}.{}%:{bits}bit", frac / 10),
                    _ => write!(f, "topk:{whole}.{frac:02}%:{bits}bit"),
                }
            }
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_parse_and_print_back() {
        let cases = [
            ("none", Compression::None, "none"),
            ("bf16", Compression::Bf16, "bf16"),
            ("int8", Compression::Int8, "int8"),
            ("topk", Compression::TOPK_DEFAULT, "topk:2%:2bit"),
            ("topk:2%", Compression::TOPK_DEFAULT, "topk:2%:2bit"),
            ("topk:2%:2bit", Compression::TOPK_DEFAULT, "topk:2%:2bit"),
            (
                "topk:1.5%:4bit",
                Compression::TopK {
                    density_bp: 150,
                    bits: 4,
                },
                "topk:1.5%:4bit",
            ),
            (
                "topk:0.5%:2bit",
                Compression::TopK {
                    density_bp: 50,
                    bits: 2,
                },
                "topk:0.5%:2bit",
            ),
            (
                "topk:0.05%",
                Compression::TopK {
                    density_bp: 5,
                    bits: 2,
                },
                "topk:0.05%:2bit",
            ),
            (
                "topk:100%:4bit",
                Compression::TopK {
                    density_bp: 10_000,
                    bits: 4,
                },
                "topk:100%:4bit",
            ),
        ];
        for (text, want, shown) in cases {
            let got: Compression = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<Compression>().unwrap(), want, "{shown}");
        }
    }

    #[test]
    fn bad_text_forms_name_the_problem_and_the_accepted_forms() {
        for (text, reason) in [
            ("topk:0%", "density must be in (0%, 100%]"),
            ("topk:100.01%", "density must be in (0%, 100%]"),
            ("topk:1000%", "density must be in (0%, 100%]"),
            (
                "topk:99999999999999999999.5%",
                "density must be in (0%, 100%]",
            ),
            ("topk:2", "must end in %"),
            ("topk:0.001%", "at most two decimals"),
            ("topk:-1%", "number of percent"),
            ("topk:1.%", "number of percent"),
            ("topk:2%:3bit", "2bit or 4bit"),
            ("topk:2%:2bit:x", "too many"),
            ("INT8", "unknown scheme"),
            ("", "unknown scheme"),
        ] {
            let e = text.parse::<Compression>().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("delta_compression `{text}`: ")),
                "{e}"
            );
            assert!(e.contains(reason), "{text}: {e}");
            assert!(e.contains("accepted: none, bf16, int8, topk"), "{e}");
        }
    }

    #[test]
    fn serde_reads_the_text_form() {
        use serde::de::value::{Error, StrDeserializer};
        let read = |text: &str| Compression::deserialize(StrDeserializer::<Error>::new(text));
        assert_eq!(
            read("topk:1.5%:4bit").unwrap(),
            Compression::TopK {
                density_bp: 150,
                bits: 4
            }
        );
        assert_eq!(read("int8").unwrap(), Compression::Int8);
        let e = read("topk:0%").unwrap_err().to_string();
        assert!(e.contains("density must be in (0%, 100%]"), "{e}");
    }

    #[test]
    fn every_density_prints_back_to_itself() {
        for density_bp in 1..=10_000u16 {
            for bits in [2, 4] {
                let c = Compression::TopK { density_bp, bits };
                assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
            }
        }
    }
}
