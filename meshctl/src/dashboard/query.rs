//! The query string of a request, decoded.

use std::collections::BTreeMap;

/// The parameters of `query` (`a=1&b=x%20y`), percent- and `+`-decoded; the last of a
/// repeated name wins.
pub fn params(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decoding; an invalid escape is kept as it is.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded() {
        let p = params(Some(
            "namespace=shop&path=%2Fapi%2Fa+b&bad=%zz&empty&name=x&name=y",
        ));
        assert_eq!(p["namespace"], "shop");
        assert_eq!(p["path"], "/api/a b");
        assert_eq!(p["bad"], "%zz");
        assert_eq!(p["empty"], "");
        assert_eq!(p["name"], "y");
        assert!(params(None).is_empty());
    }
}
