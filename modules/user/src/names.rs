//! Display names: what a player may be called, and the key that keeps two players from looking
//! the same.
//!
//! A name is normalized to NFKC (so `Ａｎａ` is `Ana`), its runs of spaces become one and its ends
//! are trimmed; control characters, invisible format characters (zero-width spaces and joiners,
//! bidirectional overrides and isolates, soft hyphens, …), other default-ignorable characters
//! (Hangul fillers, variation selectors) and private-use or unassigned characters are refused
//! with a reason naming the code point. Its key is the normalized name in lower case and NFKC
//! again; the store holds keys in a unique index, so two players never hold names that differ
//! only in case or in compatibility forms. Look-alike letters of different scripts (Latin `a`,
//! Cyrillic `а`) are not folded.

use mortar::prelude::*;
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// The most characters of a name, after normalization.
pub(crate) const MAX_NAME_CHARS: usize = 24;

/// The name `raw` stands for, normalized; `BAD_REQUEST` saying which rule it breaks.
pub(crate) fn normalize(raw: &str) -> Result<String, Failure> {
    // Checked before normalizing: NFKC would turn some of them into plain characters.
    for c in raw.chars() {
        refuse_char(c)?;
    }
    let nfkc: String = raw.nfkc().collect();
    for c in nfkc.chars() {
        refuse_char(c)?;
    }
    let name = nfkc.split_whitespace().collect::<Vec<_>>().join(" ");
    if !(1..=MAX_NAME_CHARS).contains(&name.chars().count()) {
        return Err(Code::BAD_REQUEST.because("name must be 1–24 characters, not only spaces"));
    }
    Ok(name)
}

/// The key of a normalized name: two names with the same key look the same.
pub(crate) fn key(name: &str) -> String {
    name.nfkc().flat_map(char::to_lowercase).collect::<String>().nfkc().collect()
}

/// `BAD_REQUEST` naming `c` when a name may not hold it.
fn refuse_char(c: char) -> Result<(), Failure> {
    let category = c.general_category();
    if category == GeneralCategory::Control {
        return Err(Code::BAD_REQUEST
            .because(format!("name must not hold control characters (U+{:04X})", u32::from(c))));
    }
    if category == GeneralCategory::Format || default_ignorable(c) {
        return Err(Code::BAD_REQUEST.because(format!(
            "name must not hold invisible or formatting characters (U+{:04X}: zero-width, bidirectional and the like)",
            u32::from(c)
        )));
    }
    if matches!(
        category,
        GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) {
        return Err(Code::BAD_REQUEST.because(format!(
            "name must not hold private-use, unassigned or line-breaking characters (U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Unicode's `Default_Ignorable_Code_Point`s that are not format characters: shown as nothing.
fn default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x034F | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x2800 | 0x3164 | 0xFE00..=0xFE0F
            | 0xFFA0 | 0xFFF0..=0xFFF8 | 0xE0000..=0xE0FFF
    )
}

/// Whether name key `key` has the form of a default name (`player` and 8 digits), which players
/// may not choose.
pub(crate) fn is_default(key: &str) -> bool {
    key.strip_prefix("player")
        .is_some_and(|digits| digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// A name for a player who has not chosen one: `Player` and 8 digits. `seed` picks the digits
/// (random for a new account; the user id for one named before names were keyed).
pub(crate) fn default_name(seed: u64) -> String {
    format!("Player{:08}", seed % 100_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(name: &str) -> String {
        let failure = normalize(name).unwrap_err();
        assert_eq!(failure.code(), Code::BAD_REQUEST);
        failure.reason().unwrap_or_default().to_owned()
    }

    #[test]
    fn names_are_nfkc_with_single_spaces() {
        assert_eq!(normalize("Ana the Bold").unwrap(), "Ana the Bold");
        assert_eq!(normalize("Ａｎａ").unwrap(), "Ana", "fullwidth letters");
        assert_eq!(normalize("  Ana \u{3000}  Bold ").unwrap(), "Ana Bold", "ideographic space, runs, ends");
        assert_eq!(normalize("ﬁre").unwrap(), "fire", "ligature");
        assert_eq!(normalize(&"é".repeat(24)).unwrap().chars().count(), 24);
        assert_eq!(normalize("e\u{301}").unwrap(), "é", "composed");
    }

    #[test]
    fn invisible_control_and_bidi_characters_are_refused_by_code_point() {
        assert!(why("An\u{200B}a").contains("U+200B"), "zero-width space");
        assert!(why("\u{202E}anA").contains("U+202E"), "right-to-left override");
        assert!(why("Ana\u{2066}").contains("U+2066"), "left-to-right isolate");
        assert!(why("A\u{00AD}na").contains("U+00AD"), "soft hyphen");
        assert!(why("A\u{FEFF}na").contains("U+FEFF"), "byte order mark");
        assert!(why("\u{3164}").contains("U+3164"), "Hangul filler");
        assert!(why("Ana\u{FE0F}").contains("U+FE0F"), "variation selector");
        assert!(why("A\u{E0041}").contains("U+E0041"), "tag character");
        assert_eq!(why("a\u{7}b"), "name must not hold control characters (U+0007)");
        assert!(why("A\u{E000}").contains("private-use"));
        assert!(why("A\u{2028}b").contains("U+2028"));
        assert!(why("").contains("1–24"));
        assert!(why("   ").contains("1–24"));
        assert!(why(&"é".repeat(25)).contains("1–24"));
    }

    #[test]
    fn keys_ignore_case_and_compatibility_forms() {
        assert_eq!(key("Ana"), key("ANA"));
        assert_eq!(key("Ana"), key(&normalize("Ａｎａ").unwrap()));
        assert_eq!(key("STRASSE"), "strasse");
        assert_ne!(key("Ana"), key("Anna"));
        assert_ne!(key("Ana"), key("Аna"), "Cyrillic А is another letter");
    }

    #[test]
    fn default_names_fit_and_are_valid() {
        assert_eq!(default_name(42), "Player00000042");
        assert!(is_default(&key(&default_name(42))));
        assert!(is_default(&key("ＰＬＡＹＥＲ１２３４５６７８")), "fullwidth folds to the same key");
        assert!(!is_default(&key("Player1234567")) && !is_default(&key("Player123456789")));
        assert!(!is_default(&key("Playerone")));
        assert_eq!(normalize(&default_name(u64::MAX)).unwrap(), default_name(u64::MAX));
    }
}
