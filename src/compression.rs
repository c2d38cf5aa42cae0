//! How squashfs data and metadata blocks are compressed.

use std::fmt;
use std::str::FromStr;

/// `zstd:N` (1..=22) or `none`. Part of every block's cache key: the same input under other settings
/// is another block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    Zstd(i32),
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(19)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            Compression::None => f.write_str("none"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Compression::None);
        }
        let level = s
            .strip_prefix("zstd:")
            .or_else(|| (s == "zstd").then_some("19"))
            .ok_or_else(|| format!("unknown compression '{s}' (expected zstd:N or none)"))?;
        match level.parse::<i32>() {
            Ok(l) if (1..=22).contains(&l) => Ok(Compression::Zstd(l)),
            _ => Err(format!("zstd level '{level}' is not a number from 1 to 22")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            "zstd:3".parse::<Compression>().unwrap(),
            Compression::Zstd(3)
        );
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert!("zstd:0".parse::<Compression>().is_err());
        assert!("gzip".parse::<Compression>().is_err());
        assert_eq!(Compression::Zstd(19).to_string(), "zstd:19");
    }
}
