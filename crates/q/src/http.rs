//! The q text an HTTP request carries, as kdb+'s default handlers read it.
//!
//! A kdb+ port answers `GET /?expr` by evaluating `expr` (`.z.ph`, after `.h.uh` decodes it) and
//! a `POST` by evaluating its body (`.z.pp`). A policy that checks free-text IPC queries checks
//! these texts the same way.

/// The q text of a request: for a `GET` (or `HEAD`) of the root path, its query string with
/// `%XX` escapes decoded as q's `.h.uh` decodes them (`+` stays `+`); for a `POST`, its body.
/// `None` for anything else.
pub fn http_text(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    match method {
        "GET" | "HEAD" if path == "/" => query.map(|query| percent_decode(query.as_bytes())),
        "POST" => Some(body.to_vec()),
        _ => None,
    }
}

/// `%XX` sequences decoded; anything else (a `+`, a `%` not followed by two hex digits) as it is.
pub fn percent_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%'
            && let [high, low, after @ ..] = tail
            && let (Some(high), Some(low)) = (hex(*high), hex(*low))
        {
            out.push((high << 4) | low);
            rest = after;
            continue;
        }
        out.push(byte);
        rest = tail;
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_leaves_plus_and_broken_escapes_alone() {
        assert_eq!(percent_decode(b"select%20from%20t"), b"select from t");
        assert_eq!(percent_decode(b"2+2"), b"2+2");
        assert_eq!(percent_decode(b"%41%4a%zz%4"), b"AJ%zz%4");
        assert_eq!(percent_decode(b"%"), b"%");
    }

    #[test]
    fn the_text_is_the_root_query_or_the_post_body() {
        assert_eq!(
            http_text("GET", "/", Some("til%2010"), b"").as_deref(),
            Some(&b"til 10"[..])
        );
        assert_eq!(http_text("GET", "/index.html", Some("a"), b""), None);
        assert_eq!(http_text("GET", "/", None, b""), None);
        assert_eq!(
            http_text("POST", "/x", None, b"1+1").as_deref(),
            Some(&b"1+1"[..])
        );
        assert_eq!(http_text("PUT", "/", Some("a"), b"b"), None);
    }
}
