use super::*;

fn scanner() -> Scanner {
    match Scanner::builtin(true, true) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn kinds(text: &str) -> Vec<String> {
    scanner()
        .scan_text(text)
        .into_iter()
        .map(|m| m.kind)
        .collect()
}

#[test]
fn builtin_detectors_compile() {
    assert!(Scanner::builtin(true, true).is_ok());
}
