//! Joliet names (Joliet specification, 1995): UCS-2 big-endian, at most 64 characters, without
//! `* / : ; ? \` and control characters. Names outside the Basic Multilingual Plane and invalid UTF-8
//! degrade to `_` / U+FFFD. Over-long names are cut keeping a short extension, and collisions (after
//! cutting) get a decimal counter before the extension; children are processed in raw-name order, so
//! the result is deterministic. No `;1` version is appended. Symlinks have no Joliet form and are
//! left out of the Joliet tree.

use super::names::{unique, Used};

const MAX_CHARS: usize = 64;
/// Longest extension kept when a name must be cut.
const MAX_EXT_CHARS: usize = 16;

fn ucs2(name: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(name)
        .chars()
        .map(|c| match c {
            '*' | '/' | ':' | ';' | '?' | '\\' => u16::from(b'_'),
            c if (c as u32) < 0x20 || (c as u32) > 0xFFFF => u16::from(b'_'),
            c => c as u32 as u16,
        })
        .collect()
}

/// Joliet identifiers (UCS-2 units) for the given raw names, in the same order, unique.
pub(crate) fn joliet_identifiers(names: &[&[u8]]) -> Vec<Vec<u16>> {
    let mut used = Used::new();
    names
        .iter()
        .map(|name| {
            let full = ucs2(name);
            let dot = full.iter().rposition(|&c| c == u16::from(b'.'));
            let split = match dot {
                Some(p) if p > 0 && full.len() - p <= MAX_EXT_CHARS => p,
                _ => full.len(),
            };
            unique(&full[..split], &full[split..], &[], MAX_CHARS, &mut used)
        })
        .collect()
}

/// Big-endian bytes of UCS-2 units.
pub(crate) fn be_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn long_name_keeps_extension() {
        let long = format!("{}.txt", "x".repeat(100));
        let ids = joliet_identifiers(&[
            long.as_bytes(),
            format!("{}y.txt", "x".repeat(99)).as_bytes(),
        ]);
        assert_eq!(ids[0].len(), 64);
        assert!(String::from_utf16(&ids[0]).unwrap().ends_with(".txt"));
        assert_ne!(ids[0], ids[1]);
    }

    proptest! {
        // A fixed seed, as in the fuzz harnesses: a failure in CI reproduces anywhere.
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(0x150f5), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn identifiers_are_valid_and_unique(
            names in proptest::collection::btree_set(
                proptest::collection::vec(prop_oneof![Just(b'x'), Just(b'.'), Just(b';'), any::<u8>()], 1..150),
                1..60),
        ) {
            let refs: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
            let ids = joliet_identifiers(&refs);
            let set: BTreeSet<_> = ids.iter().collect();
            prop_assert_eq!(set.len(), ids.len());
            for id in &ids {
                prop_assert!(!id.is_empty() && id.len() <= MAX_CHARS);
                prop_assert!(id.iter().all(|&c| c >= 0x20 && !b"*/:;?\\".iter().any(|&b| u16::from(b) == c)));
            }
        }
    }
}
