//! `-o`: the one reader of the output flag of every verb, in either mode.

/// Whether `-o` asks for JSON, rather than the verb's text or table (`text` and `table` both
/// name it, whichever the verb prints).
pub fn wants_json(output: Option<&str>) -> Result<bool, String> {
    match output {
        Some("json") => Ok(true),
        None | Some("table") | Some("text") => Ok(false),
        Some(other) => Err(format!("--output {other}: use text or json")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_and_table_are_read_anything_else_refused() {
        assert_eq!(wants_json(Some("json")), Ok(true));
        assert_eq!(wants_json(None), Ok(false));
        assert_eq!(wants_json(Some("table")), Ok(false));
        assert_eq!(wants_json(Some("text")), Ok(false));
        assert_eq!(
            wants_json(Some("yaml")),
            Err("--output yaml: use text or json".to_owned())
        );
    }
}
